"""The Spark query engine: point-in-time feature values, labels and the other questions of
the query engine port, computed by Spark over the same Parquet history as DuckDB.

Feature values follow sql.py's plan: the spine joins its entity's events with
``start <= event_time < t`` (the widest window's start) and each column aggregates only the
joined events that pass its own start and filter, so values follow docs/concepts.md's time
semantics exactly. ``last`` and ``first`` order by (event time, log offset) as everywhere.
pyspark is imported here only, and lazily: ``pip install "headwater[spark]"``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa

from headwater.definitions import FeatureColumn, Label, Stream
from headwater.features.plan import FeatureSetPlan
from headwater.history.engines.base import Snapshot
from headwater.history.engines.spark_sql import (
    SUPPORTED,
    Query,
    SparkEngineError,
    aggregate,
    arrow_type,
    check_supported,
    filter_column,
    integer,
    label_type,
    quoted,
    spark_type,
)
from headwater.history.engines.sql import snapshot_condition
from headwater.history.schema import history_schema
from headwater.stores.offline.base import OfflineStore

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SparkEngine", "SparkEngineError", "SparkSettings", "check_supported", "spark_session"]

INSTALL = 'pip install "headwater[spark]"'
DEFAULT_CONF = {
    "spark.app.name": "headwater",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
# Schemes Spark reads itself (with the Hadoop connector on its classpath); s3:// is s3a there.
SPARK_SCHEMES = {"file", "hdfs", "s3a", "gs", "abfs", "abfss", "wasb", "wasbs"}


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


class SparkEngine:
    """The query engine on Spark: every question becomes a Spark job over the history's
    Parquet files (read by Spark itself where it knows their scheme)."""

    name = "spark"

    def __init__(self, offline: OfflineStore, settings: SparkSettings) -> None:
        self.offline, self._settings = offline, settings

    @property
    def session(self) -> SparkSession:
        # not kept: the session may have been stopped, or belong to another thread
        return spark_session(self._settings)

    def feature_values(
        self,
        plan: FeatureSetPlan,
        columns: Sequence[FeatureColumn],
        spine_keys: pa.Table,
        times: np.ndarray,
        snapshot: Snapshot | None = None,
    ) -> pa.Table:
        """One row per spine row (in order): the values of ``columns`` at each row's time."""
        check_supported(columns)
        if len(times) == 0:
            return pa.table({c.name: pa.array([], arrow_type(c)) for c in columns})
        with _quiet():
            session = self.session
            query = Query(plan, columns)
            spine = session.createDataFrame(query.spine(spine_keys, times))
            events = query.events(self._history(session, plan.stream, snapshot))
            joined = spine.join(events, query.join_condition(), "left")
            result = joined.groupBy("_row").agg(*query.aggregates()).toArrow()
        result = result.sort_by("_row")
        return pa.table(
            {c.name: result[f"_c{i}"].cast(arrow_type(c)) for i, c in enumerate(columns)}
        )

    def history(self, stream: Stream, snapshot: Snapshot | None = None) -> pa.Table:
        schema = history_schema(stream)
        with _quiet():
            table = self._history(self.session, stream, snapshot).toArrow()
        return pa.table({f.name: table[f.name].cast(f.type) for f in schema}, schema=schema)

    def first_seen(
        self, keys: Sequence[str], streams: Sequence[Stream], snapshot: Snapshot | None
    ) -> pa.Table:
        from pyspark.sql import functions as F

        with _quiet():
            session = self.session
            parts = [
                self._history(session, s, snapshot).select(
                    *(F.col(quoted(k)).cast("string").alias(k) for k in keys), "_event_time"
                )
                for s in streams
            ]
            union = parts[0]
            for part in parts[1:]:
                union = union.unionByName(part)
            result = union.groupBy(*keys).agg(F.min("_event_time").alias("first_seen")).toArrow()
        if not result.num_rows:  # Spark's empty result may lack the types
            return pa.table(
                {
                    **{k: pa.array([], pa.string()) for k in keys},
                    "first_seen": pa.array([], pa.int64()),
                }
            )
        return result.sort_by([(k, "ascending") for k in keys])

    def label_aggregates(
        self,
        label: Label,
        keys: pa.Table,
        times: np.ndarray,
        snapshot: Snapshot | None = None,
    ) -> pa.Array:
        from pyspark.sql import functions as F

        agg = label.aggregation
        out_type = label_type(label)
        if len(times) == 0:
            return pa.array([], out_type)
        if agg.kind not in SUPPORTED:
            raise SparkEngineError(f"label {label.name!r}: the spark engine has no {agg.kind!r}")
        fields = [*label.entity.keys, *([agg.field] if agg.field else [])]
        fields += sorted(label.where.fields()) if label.where else []
        names = {f: f"_f{i}" for i, f in enumerate(dict.fromkeys(fields))}
        times = np.asarray(times, dtype=np.int64)
        spine = {"_row": np.arange(len(times), dtype=np.int64), "_t": times}
        spine["_end"] = times + label.horizon_us
        for i, k in enumerate(label.entity.keys):
            spine[f"_k{i}"] = keys[k]
        with _quiet():
            session = self.session
            history = self._history(session, label.stream, snapshot)
            events = history.select(
                F.col("_event_time").alias("_ts"),
                F.col("_offset").alias("_off"),
                *(F.col(quoted(f)).alias(alias) for f, alias in names.items()),
            )
            cond = (F.col("_ts") >= F.col("_t")) & (F.col("_ts") < F.col("_end"))
            for i, k in enumerate(label.entity.keys):
                cond = cond & (F.col(f"_k{i}") == F.col(names[k]))
            joined = session.createDataFrame(pa.table(spine)).join(events, cond, "left")
            value = F.col(names[agg.field]) if agg.field else None
            keep = F.col("_off").isNotNull()
            if label.where is not None:
                keep = keep & filter_column(label.where.spec(), names)
            if value is not None:
                keep = keep & value.isNotNull()
            result = (
                joined.groupBy("_row")
                .agg(aggregate(agg, keep, value, integer(label.stream, agg)).alias("v"))
                .toArrow()
            )
        return result.sort_by("_row")["v"].cast(out_type).combine_chunks()

    def latest(
        self, stream: Stream, id_field: str, field: str, wanted: Sequence[str]
    ) -> dict[str, tuple[Any, int]]:
        from pyspark.sql import functions as F

        ids = [str(i) for i in wanted]
        if not ids:
            return {}
        with _quiet():
            history = self._history(self.session, stream, None)
            key = F.col(quoted(id_field)).cast("string")
            order = F.struct("_event_time", F.coalesce("_partition", F.lit(0)), "_offset")
            rows = (
                history.where(F.col(quoted(field)).isNotNull() & key.isin(ids))
                .groupBy(key.alias("id"))
                .agg(
                    F.max(F.struct(order.alias("o"), F.col(quoted(field)).alias("v")))
                    .getField("v")
                    .alias("v"),
                    F.min("_event_time").alias("t"),
                )
                .collect()
            )
        return {str(r["id"]): (r["v"], int(r["t"])) for r in rows}

    def field_stats(self, stream: Stream) -> list[dict[str, Any]]:
        from pyspark.sql import functions as F

        aggs = [F.count(F.lit(1)).alias("n")]
        for i, (name, field) in enumerate(stream.fields.items()):
            col = F.col(quoted(name))
            numeric = field.dtype.value in ("int", "float", "timestamp")
            aggs += [
                F.count(col).alias(f"c{i}"),
                F.count_distinct(col).alias(f"d{i}"),
                F.min(col).alias(f"lo{i}"),
                F.max(col).alias(f"hi{i}"),
                (F.avg(col) if numeric else F.lit(None)).alias(f"m{i}"),
            ]
        with _quiet():
            row = self._history(self.session, stream, None).agg(*aggs).collect()[0]
        return [
            {
                "field": name,
                "count": row["n"],
                "present": row[f"c{i}"],
                "distinct": row[f"d{i}"],
                "min": row[f"lo{i}"],
                "max": row[f"hi{i}"],
                "mean": row[f"m{i}"],
            }
            for i, name in enumerate(stream.fields)
        ]

    def close(self) -> None:
        """The Spark session is the process's: it stays for the next engine."""

    def _history(
        self, session: SparkSession, stream: Stream, snapshot: Snapshot | None
    ) -> DataFrame:
        """The stream's history with every column of its schema (null where no file has
        it yet), below the snapshot's offsets."""
        from pyspark.sql import functions as F

        files = self.offline.files(stream.name)
        schema = history_schema(stream)
        if not files:
            return session.createDataFrame(schema.empty_table())
        paths = [p for p in map(_spark_path, files) if p is not None]
        if len(paths) == len(files):
            # The stream's schema, not one inferred from every file's footer: a column a file
            # lacks (a field added since) reads as null, as DuckDB's union_by_name gives.
            ddl = ", ".join(f"{quoted(f.name)} {spark_type(f.type)}" for f in schema)
            history = session.read.schema(ddl).parquet(*paths)
        else:
            # A filesystem only fsspec knows (memory://): the driver reads the history and
            # ships it to Spark, which suits small histories and tests, not backfills.
            history = session.createDataFrame(self._read_through_store(files, schema))
        if snapshot is not None:
            history = history.where(F.expr(snapshot_condition(snapshot, stream.name)))
        return history

    def _read_through_store(self, files: list[str], schema: pa.Schema) -> pa.Table:
        import pyarrow.parquet as pq

        fs = self.offline.filesystem()
        tables = []
        for location in files:
            if fs is None:
                tables.append(pq.read_table(location))
                continue
            with fs.open(location, "rb") as f:
                tables.append(pq.ParquetFile(f).read())
        table = pa.concat_tables(tables, promote_options="default")
        return pa.table(
            {
                f.name: table[f.name].cast(f.type)
                if f.name in table.column_names
                else pa.nulls(table.num_rows, f.type)
                for f in schema
            },
            schema=schema,
        )


def _spark_path(location: str) -> str | None:
    """The path Spark reads for a location of ``files``, or None when Spark cannot."""
    scheme = urlparse(location).scheme
    if "://" not in location:
        return location
    if scheme == "s3":
        return "s3a://" + location.split("://", 1)[1]
    return location if scheme in SPARK_SCHEMES else None
