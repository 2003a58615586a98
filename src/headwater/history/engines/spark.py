"""The Spark engine: the batch engine's point-in-time feature values, computed by Spark SQL.

It follows batch.py's plan over the same Parquet history: the spine joins its entity's events
with ``start <= event_time < t`` (the widest window's start) and each column aggregates only
the joined events that pass its own start and filter, so values follow DESIGN.md's time
semantics exactly. ``last`` and ``first`` order by (event time, log offset) as everywhere.
pyspark is imported here only, and lazily: ``pip install "headwater[spark]"``.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa

from headwater.definitions import FeatureColumn, HeadwaterError, Stream
from headwater.features.plan import FeatureSetPlan
from headwater.history.engines.duckdb import snapshot_condition
from headwater.history.schema import ARROW_TYPES, history_schema

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

INSTALL = 'pip install "headwater[spark]"'
SUPPORTED = frozenset(
    {"count", "sum", "mean", "min", "max", "stddev", "variance", "last", "first", "last_k"}
    | {"count_distinct"}
)
DEFAULT_CONF = {
    "spark.app.name": "headwater",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
# Schemes Spark reads itself (with the Hadoop connector on its classpath); s3:// is s3a there.
SPARK_SCHEMES = {"file", "hdfs", "s3a", "gs", "abfs", "abfss", "wasb", "wasbs"}


class SparkEngineError(HeadwaterError):
    """The Spark engine cannot compute what was asked, or Spark is not installed."""


@dataclass(frozen=True)
class SparkSettings:
    """Where the Spark engine runs: ``master`` (``local[*]``, ``spark://host:7077``, ``yarn``)
    and extra Spark ``conf`` pairs (``spark.executor.memory``, ``spark.sql.shuffle.partitions``).

    >>> SparkSettings(conf=(("spark.sql.shuffle.partitions", "8"),)).master
    'local[*]'
    """

    master: str = "local[*]"
    conf: tuple[tuple[str, str], ...] = ()


def spark_session(settings: SparkSettings) -> SparkSession:
    """The process's Spark session: an active one is reused as it is (pyspark keeps one)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkEngineError(f"the spark engine needs pyspark: {INSTALL}") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.master(settings.master)
    for key, value in {**DEFAULT_CONF, **dict(settings.conf)}.items():
        builder = builder.config(key, value)
    with _quiet():
        session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


@contextmanager
def _quiet() -> Iterator[None]:
    # pyspark warns on every Arrow conversion that it was not tested with pandas 3; we hand it
    # Arrow tables only, never pandas frames, so the warning does not apply.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PySpark does not yet fully support", FutureWarning)
        yield


def check_supported(columns: Sequence[FeatureColumn]) -> None:
    """Refuse, by name, an aggregation the Spark engine does not compute."""
    for c in columns:
        if c.aggregation.kind not in SUPPORTED:
            raise SparkEngineError(
                f"feature {c.name!r}: the spark engine has no {c.aggregation.kind!r} "
                "aggregation; build this training set with engine='duckdb'"
            )


class SparkFeatureValues:
    """Feature values of spine rows computed by Spark, one feature set at a time."""

    def __init__(self, settings: SparkSettings) -> None:
        self._settings = settings

    @property
    def session(self) -> SparkSession:
        # not kept: the session may have been stopped, or belong to another thread
        return spark_session(self._settings)

    def values(
        self,
        plan: FeatureSetPlan,
        columns: Sequence[FeatureColumn],
        spine_keys: pa.Table,
        times: np.ndarray,
        files: list[str],
        snapshot: Mapping[str, int] | None = None,
    ) -> pa.Table:
        """One row per spine row (in order): the values of ``columns`` at each row's time."""
        check_supported(columns)
        if len(times) == 0:
            return pa.table({c.name: pa.array([], _arrow_type(c)) for c in columns})
        with _quiet():
            session = self.session
            query = _Query(plan, columns)
            spine = session.createDataFrame(query.spine(spine_keys, times))
            events = query.events(self._history(session, plan.stream, files), snapshot)
            joined = spine.join(events, query.join_condition(), "left")
            result = joined.groupBy("_row").agg(*query.aggregates()).toArrow()
        result = result.sort_by("_row")
        return pa.table(
            {c.name: result[f"_c{i}"].cast(_arrow_type(c)) for i, c in enumerate(columns)}
        )

    @staticmethod
    def _history(session: SparkSession, stream: Stream, files: list[str]) -> DataFrame:
        if not files:
            return session.createDataFrame(history_schema(stream).empty_table())
        paths = [p for p in map(_spark_path, files) if p is not None]
        if len(paths) == len(files):
            # The stream's schema, not one inferred from every file's footer: a column a file
            # lacks (a field added since) reads as null, as DuckDB's union_by_name gives.
            schema = ", ".join(
                f"{_quoted(f.name)} {_spark_type(f.type)}" for f in history_schema(stream)
            )
            return session.read.schema(schema).parquet(*paths)
        # A filesystem only fsspec knows (memory://): the driver reads the history and ships
        # it to Spark, which suits small histories and tests, not backfills.
        return session.createDataFrame(_read_with_fsspec(files))


def _read_with_fsspec(files: list[str]) -> pa.Table:
    import pyarrow.parquet as pq
    from fsspec.core import url_to_fs

    tables = []
    for location in files:
        fs, path = url_to_fs(location)
        with fs.open(path, "rb") as f:
            tables.append(pq.ParquetFile(f).read())
    return pa.concat_tables(tables, promote_options="default")


def _spark_path(location: str) -> str | None:
    """The path Spark reads for a location of ``files``, or None when Spark cannot."""
    scheme = urlparse(location).scheme
    if "://" not in location:
        return location
    if scheme == "s3":
        return "s3a://" + location.split("://", 1)[1]
    return location if scheme in SPARK_SCHEMES else None


def _arrow_type(column: FeatureColumn) -> pa.DataType:
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


class _Query:
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
            spine[name] = ((times - window) // hop) * hop  # floor, as batch.py and DESIGN.md
        return pa.table(spine)

    def events(self, history: DataFrame, snapshot: Mapping[str, int] | None) -> DataFrame:
        from pyspark.sql import functions as F

        schema = {f.name: f.type for f in history_schema(self.plan.stream)}
        for name in ["_partition", *self.field_names]:
            if name not in history.columns:  # a field no archived file has yet: all null
                history = history.withColumn(name, F.lit(None).cast(_spark_type(schema[name])))
        if snapshot is not None:
            history = history.where(F.expr(snapshot_condition(snapshot, self.plan.stream.name)))
        return history.select(
            F.col("_event_time").alias("_ts"),
            F.col("_offset").alias("_off"),
            *(F.col(_quoted(f)).alias(alias) for f, alias in self.field_names.items()),
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
            out.append(_aggregate(c, cond, self._value(c)).alias(f"_c{i}"))
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


def _aggregate(column: FeatureColumn, cond: Column, value: Column | None) -> Column:
    """The Spark aggregate of ``column`` over the joined rows where ``cond`` is true."""
    from pyspark.sql import functions as F

    agg = column.aggregation
    if value is None:  # count
        return F.count(F.when(cond, F.lit(1)))
    x = F.when(cond, value)
    ordered = F.when(
        cond, F.struct(F.col("_ts").alias("t"), F.col("_off").alias("o"), value.alias("v"))
    )
    match agg.kind:
        case "sum":
            return F.coalesce(F.sum(x), F.lit(0))
        case "mean":
            return F.avg(x)
        case "variance":
            return F.var_pop(x)
        case "stddev":
            return F.stddev_pop(x)
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


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _spark_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_int32(arrow_type):
        return "int"
    if pa.types.is_int64(arrow_type):
        return "bigint"
    if pa.types.is_floating(arrow_type):
        return "double"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    return "string"
