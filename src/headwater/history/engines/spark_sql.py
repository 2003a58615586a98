"""What the Spark engine's queries are made of: the aggregates of every aggregation, feature
filters as Spark columns, and the types of what comes back. pyspark is imported lazily."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from headwater.definitions import Aggregation, FeatureColumn, HeadwaterError, Label, Stream
from headwater.features.plan import FeatureSetPlan
from headwater.history.schema import ARROW_TYPES, history_schema

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

SUPPORTED = frozenset(
    {"count", "sum", "mean", "min", "max", "stddev", "variance", "last", "first", "last_k"}
    | {"count_distinct"}
)


class SparkEngineError(HeadwaterError):
    """The Spark engine cannot compute what was asked, or Spark is not installed."""


def check_supported(columns: Sequence[FeatureColumn]) -> None:
    """Refuse, by name, an aggregation the Spark engine does not compute."""
    for c in columns:
        if c.aggregation.kind not in SUPPORTED:
            raise SparkEngineError(
                f"feature {c.name!r}: the spark engine has no {c.aggregation.kind!r} "
                "aggregation; build this training set with engine='duckdb'"
            )


def integer(stream: Stream, agg: Aggregation) -> bool:
    """Whether the aggregation reads an integer field (whose sums are exact)."""
    return bool(agg.field) and stream.fields[agg.field or ""].dtype.value == "int"


def label_type(label: Label) -> pa.DataType:
    agg = label.aggregation
    if agg.kind in ("count", "count_distinct"):
        return pa.int64()
    if agg.kind == "sum":
        dtype = label.stream.fields[agg.field or ""].dtype
        return pa.int64() if dtype.value == "int" else pa.float64()
    if agg.kind in ("mean", "variance", "stddev"):
        return pa.float64()
    value = ARROW_TYPES[label.stream.fields[agg.field or ""].dtype]
    return pa.list_(value) if agg.kind == "last_k" else value


def _in_order(kind: str, values: Column) -> Column:
    """``sum``, ``mean``, ``variance`` or ``stddev`` of a sorted array of doubles, added from
    the first element to the last (variance in two passes: the mean, then the squares)."""
    from pyspark.sql import functions as F

    def added(array: Column, term: Any = None) -> Column:
        step = (lambda acc, v: acc + v) if term is None else (lambda acc, v: acc + term(v))
        return F.aggregate(array, F.lit(0.0).cast("double"), step)

    total, n = added(values), F.size(values)
    if kind == "sum":
        return total
    mean = F.when(n > 0, total / n)
    if kind == "mean":
        return mean
    variance = F.when(n > 0, added(values, lambda v: (v - mean) * (v - mean)) / n)
    return variance if kind == "variance" else F.sqrt(variance)


def arrow_type(column: FeatureColumn) -> pa.DataType:
    """The column's type as the DuckDB engine returns it."""
    agg = column.aggregation
    if agg.kind in ("count", "count_distinct"):
        return pa.int64()
    if agg.kind in ("mean", "variance", "stddev"):
        return pa.float64()
    dtype = column.feature.stream.fields[agg.field or ""].dtype
    if agg.kind == "sum":
        return pa.int64() if dtype.value == "int" else pa.float64()
    if agg.kind == "last_k":
        return pa.list_(ARROW_TYPES[dtype])
    return ARROW_TYPES[dtype]


class Query:
    """One feature set's Spark query. Columns get positional names (``_f0`` for fields,
    ``_k0`` for spine keys, ``_s0`` for window starts) so no user name can collide."""

    def __init__(self, plan: FeatureSetPlan, columns: Sequence[FeatureColumn]) -> None:
        self.plan, self.columns = plan, list(columns)
        keys = plan.entity.keys
        fields = [
            *keys,
            *(c.aggregation.field for c in columns if c.aggregation.field),
            *(f for c in columns if c.feature.where for f in sorted(c.feature.where.fields())),
        ]
        self.field_names = {f: f"_f{i}" for i, f in enumerate(dict.fromkeys(fields))}
        self.starts: dict[tuple[int, int], str] = {}
        for c in columns:
            if c.window_us is not None and c.hop_us is not None:
                self.starts.setdefault((c.window_us, c.hop_us), f"_s{len(self.starts)}")

    def spine(self, spine_keys: pa.Table, times: np.ndarray) -> pa.Table:
        spine: dict[str, Any] = {"_row": np.arange(len(times), dtype=np.int64), "_t": times}
        stream = self.plan.stream
        for i, k in enumerate(self.plan.entity.keys):
            spine[f"_k{i}"] = spine_keys[k].cast(ARROW_TYPES[stream.fields[k].dtype])
        for (window, hop), name in self.starts.items():
            spine[name] = ((times - window) // hop) * hop  # floor, as batch.py and docs/concepts.md
        return pa.table(spine)

    def events(self, history: DataFrame) -> DataFrame:
        from pyspark.sql import functions as F

        schema = {f.name: f.type for f in history_schema(self.plan.stream)}
        for name in ["_partition", *self.field_names]:
            if name not in history.columns:  # a field no archived file has yet: all null
                history = history.withColumn(name, F.lit(None).cast(spark_type(schema[name])))
        return history.select(
            F.col("_event_time").alias("_ts"),
            F.col("_offset").alias("_off"),
            *(F.col(quoted(f)).alias(alias) for f, alias in self.field_names.items()),
        )

    def join_condition(self) -> Column:
        from pyspark.sql import functions as F

        cond = F.col("_ts") < F.col("_t")
        for i, k in enumerate(self.plan.entity.keys):
            cond = cond & (F.col(f"_k{i}") == F.col(self.field_names[k]))
        if self.starts and all(c.window_us is not None for c in self.columns):
            names = list(self.starts.values())
            lower = F.col(names[0]) if len(names) == 1 else F.least(*map(F.col, names))
            cond = cond & (F.col("_ts") >= lower)
        return cond

    def aggregates(self) -> list[Column]:
        out = []
        for i, c in enumerate(self.columns):
            cond = self._condition(c)
            exact = integer(self.plan.stream, c.aggregation)
            out.append(aggregate(c.aggregation, cond, self._value(c), exact).alias(f"_c{i}"))
        return out

    def _value(self, column: FeatureColumn) -> Column | None:
        from pyspark.sql import functions as F

        field = column.aggregation.field
        return None if field is None else F.col(self.field_names[field])

    def _condition(self, column: FeatureColumn) -> Column:
        from pyspark.sql import functions as F

        cond = F.col("_off").isNotNull()  # a spine row without events joins one null row
        if column.window_us is not None:
            cond = cond & (
                F.col("_ts") >= F.col(self.starts[(column.window_us, column.hop_us or 0)])
            )
        if column.feature.where is not None:
            cond = cond & filter_column(column.feature.where.spec(), self.field_names)
        value = self._value(column)
        return cond if value is None else cond & value.isNotNull()


def aggregate(agg: Aggregation, cond: Column, value: Column | None, exact: bool = False) -> Column:
    """The Spark aggregate of ``agg`` over the joined rows where ``cond`` is true.

    Spark adds partial sums in whichever order its tasks finish, so floating-point ``sum`` and
    ``mean`` (and every ``variance``, ``stddev``) add the group's values in ascending order:
    the same events give the same bits whatever the partitions. ``exact``: the field is an
    integer, whose sum Spark computes exactly."""
    from pyspark.sql import functions as F

    if value is None:  # count
        return F.count(F.when(cond, F.lit(1)))
    x = F.when(cond, value)
    ordered = F.when(
        cond, F.struct(F.col("_ts").alias("t"), F.col("_off").alias("o"), value.alias("v"))
    )
    match agg.kind:
        case "sum" if exact:
            return F.coalesce(F.sum(x), F.lit(0))
        case "mean" if exact:
            return F.avg(x)
        case "sum" | "mean" | "variance" | "stddev":
            return _in_order(agg.kind, F.array_sort(F.collect_list(x.cast("double"))))
        case "min":
            return F.min(x)
        case "max":
            return F.max(x)
        case "last":
            return F.max(ordered).getField("v")
        case "first":
            return F.min(ordered).getField("v")
        case "last_k":
            latest = F.slice(F.sort_array(F.collect_list(ordered), asc=False), 1, agg.k or 1)
            return F.transform(latest, lambda e: e.getField("v"))
        case "count_distinct":
            # a set per row, not COUNT(DISTINCT): Spark expands every joined row once per
            # distinct aggregate for those
            return F.size(F.collect_set(x))
    raise SparkEngineError(f"the spark engine has no {agg.kind!r} aggregation")


def filter_column(spec: Any, names: Mapping[str, str]) -> Column:
    """A feature filter (its ``spec()``) as a Spark column over fields renamed by ``names``;
    Spark's three-valued logic is SQL's, as the DuckDB engine and the stream processor use."""
    from pyspark.sql import functions as F

    op = spec[0]
    if op in ("and", "or"):
        parts = [filter_column(p, names) for p in spec[1]]
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if op == "and" else (out | p)
        return out
    if op == "not":
        return ~filter_column(spec[1], names)
    field = F.col(names[spec[1]])
    if op == "in":
        return field.isin([F.lit(v) for v in spec[2]])
    if op in ("is_null", "not_null"):
        return field.isNull() if op == "is_null" else field.isNotNull()
    compare = _COMPARISONS.get(op)
    if compare is None:
        raise SparkEngineError(f"the spark engine cannot evaluate the filter {spec!r}")
    return compare(field, F.lit(spec[2]))  # type: ignore[no-any-return]


_COMPARISONS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def spark_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_int32(arrow_type):
        return "int"
    if pa.types.is_int64(arrow_type):
        return "bigint"
    if pa.types.is_floating(arrow_type):
        return "double"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    return "string"
