"""Point-in-time-correct training sets over the offline store."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.definitions import Entity, HeadwaterError, Stream
from headwater.features.catalog import FeatureCatalog, evaluate_derived, numeric_names
from headwater.history.archiver import Archiver
from headwater.history.engines.base import QueryEngine
from headwater.history.engines.duckdb import DuckDBEngine
from headwater.history.engines.spark import SparkEngine, SparkSettings, check_supported
from headwater.privacy.policies import KeyPseudonyms
from headwater.stores.offline.base import OfflineStore

ENGINES = ("duckdb", "spark")


class SpineError(HeadwaterError, ValueError):
    """The spine of a training set is missing columns or has unusable times."""


class EngineError(HeadwaterError, ValueError):
    """A training set was asked of an engine that does not exist."""


def to_arrow(table: Any) -> pa.Table:
    """Accept a pyarrow Table, a pandas DataFrame or a polars DataFrame."""
    if isinstance(table, pa.Table):
        return table
    if hasattr(table, "to_arrow"):  # polars
        return table.to_arrow()
    module = type(table).__module__
    if module.startswith("pandas"):
        return pa.Table.from_pandas(table, preserve_index=False)
    raise SpineError(
        f"a spine must be a pandas, polars or pyarrow table, not {type(table).__name__}"
    )


def spine_times(spine: pa.Table, column: str) -> np.ndarray:
    """The spine's times as int64 UTC microseconds."""
    if column not in spine.column_names:
        raise SpineError(
            f"the spine has no time column {column!r} (columns: {spine.column_names}); "
            "pass time_column=..."
        )
    times = spine[column]
    if times.null_count:
        raise SpineError(f"the spine's time column {column!r} has {times.null_count} nulls")
    if pa.types.is_timestamp(times.type):
        if times.type.tz is None:
            times = times.cast(pa.timestamp(times.type.unit, tz="UTC"))
        if times.type.unit == "ns":  # the log keeps microseconds: drop the nanoseconds
            ns = pc.cast(times, pa.int64()).to_numpy()
            return ns // 1000
        return pc.cast(times.cast(pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy()
    if pa.types.is_date(times.type):
        return pc.cast(times.cast(pa.timestamp("us")), pa.int64()).to_numpy()
    raise SpineError(f"the spine's time column {column!r} must hold timestamps, not {times.type}")


class TrainingSets:
    """Builds training sets: every feature at each spine row's time, from the log's history."""

    def __init__(
        self,
        catalog: FeatureCatalog,
        archiver: Archiver,
        streams: dict[str, Stream],
        engines: Mapping[str, QueryEngine],
        engine: str = "duckdb",
        keys: KeyPseudonyms | None = None,
    ) -> None:
        """``engines`` by name (``duckdb``, ``spark``); ``engine`` names the default one;
        ``keys`` turns a spine's clear ids of PII keys into the pseudonyms the history holds."""
        self._catalog, self._archiver, self._streams = catalog, archiver, streams
        self.entity_keys = keys or KeyPseudonyms()
        self._engines = engines
        self._engine = _check_engine(engine)

    @classmethod
    def over(
        cls,
        catalog: FeatureCatalog,
        offline: OfflineStore,
        archiver: Archiver,
        streams: dict[str, Stream],
        *,
        engine: str = "duckdb",
        threads: int | None = None,
        sorted_history: bool = True,
        spark: SparkSettings | None = None,
        keys: KeyPseudonyms | None = None,
    ) -> TrainingSets:
        """Training sets over ``offline`` with both engines: DuckDB (``threads`` per query,
        reading the sorted copies if ``sorted_history``) and Spark (started at its first
        query only)."""
        engines: dict[str, QueryEngine] = {
            "duckdb": DuckDBEngine(offline, threads, sorted_history),
            "spark": SparkEngine(offline, spark or SparkSettings()),
        }
        return cls(catalog, archiver, streams, engines, engine, keys)

    @property
    def engine(self) -> QueryEngine:
        """The default engine: training sets, histories, labels and first-seen times."""
        return self._engines[self._engine]

    def history(self, stream: Stream) -> pa.Table:
        """A stream's whole archived history (brought up to date first)."""
        self._archiver.catch_up(stream)
        return self.engine.history(stream)

    def entities(self, entity: Entity) -> Any:
        """Every key of ``entity`` seen in the streams of its features (a pandas DataFrame)."""
        import pandas as pd

        keys = list(entity.keys)
        frames = []
        for plan in self._catalog.plans:
            if plan.entity.name == entity.name:
                history = self.history(plan.stream)
                if history.num_rows:
                    frames.append(history.select(keys).to_pandas().astype(str))
        if not frames:
            return pd.DataFrame(columns=keys)
        return pd.concat(frames).drop_duplicates().sort_values(keys, ignore_index=True)

    def build(
        self,
        spine: Any,
        features: Sequence[str],
        time_column: str = "timestamp",
        progress: Callable[[str], None] | None = None,
        snapshot: dict[str, int] | None = None,
        engine: str | None = None,
    ) -> pa.Table:
        """Feature values at each spine row's time; ``snapshot`` limits each stream's history
        to the log offsets below the given ones (to rebuild an earlier training set exactly);
        ``engine`` (``"duckdb"`` or ``"spark"``, by default the project's) computes them."""
        engine = self._engine if engine is None else _check_engine(engine)
        table = to_arrow(spine)
        for name in self.entity_keys.fields & set(table.column_names):
            index = table.column_names.index(name)
            clear = table.column(index).to_pylist()
            table = table.set_column(
                index, name, pa.array(self.entity_keys.values(clear), pa.string())
            )
        res = self._catalog.resolve(features)
        times = spine_times(table, time_column)
        for name in res.context:
            if name not in table.column_names:
                raise SpineError(f"the spine has no column {name!r}, a derived feature's context")
        if engine == "spark":  # refuse what Spark cannot do before any work
            check_supported([c for cs in res.columns.values() for c in cs])
        compute = self._engines[engine]
        values: dict[str, pa.ChunkedArray | pa.Array] = {}
        for plan_id, columns in res.columns.items():
            plan = self._catalog.plan(plan_id)
            missing = [k for k in plan.entity.keys if k not in table.column_names]
            if missing:
                raise SpineError(
                    f"the spine has no column {missing[0]!r}, the key of entity "
                    f"{plan.entity.name!r}"
                )
            # Every event the log holds now is visible, archived before or just now.
            self._archiver.catch_up(self._streams[plan.stream.name])
            if progress is not None:
                progress(plan_id)
            got = compute.feature_values(plan, columns, table, times, snapshot)
            for column in columns:
                values[column.name] = got[column.name]
        if res.derived:
            inputs: dict[str, Any] = dict(values)
            inputs.update({c: table[c] for c in res.context})
            numeric = numeric_names(c for cs in res.columns.values() for c in cs)
            for name, array in evaluate_derived(inputs, numeric, res.derived).items():
                values[name] = pa.array(array, from_pandas=True)
        out = table
        for name in res.requested:
            if name in out.column_names:
                out = out.drop([name])
            out = out.append_column(name, values[name])
        return out


def _check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise EngineError(f"unknown training-set engine {engine!r}; use one of {list(ENGINES)}")
    return engine
