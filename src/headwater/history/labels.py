"""The examples a model learns from: a spine of (entity, time) rows and their labels.

A label at t aggregates the entity's events in ``[t, t + horizon)``; features only see events
before t, so no feature sees what the label sees. Rows whose label window is not complete at
the snapshot's time are never used.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from headwater.definitions import Label, Model
from headwater.definitions.expr import sql_name
from headwater.history.engines.duckdb import events_cte, history_source, typed_aggregate_sql
from headwater.history.schema import ARROW_TYPES
from headwater.stores.offline.base import OfflineStore


def micros(times: pd.Series) -> np.ndarray:
    """UTC microseconds of a pandas datetime column, whatever its resolution."""
    return pa.array(times).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()


def sample_times(model: Model, as_of_us: int) -> list[int]:
    """Sample times, oldest first: every ``sample_every`` back over ``lookback`` from the latest
    time whose label window ends by ``as_of``."""
    every = model.sample_every_us
    latest = ((as_of_us - model.label.horizon_us) // every) * every
    first = latest - model.lookback_us
    return [t for t in range(latest, first, -every)][::-1]


def first_seen(
    con: duckdb.DuckDBPyConnection,
    model: Model,
    offline: OfflineStore,
    streams: list,
    snapshot: dict[str, int],
) -> pa.Table:
    """Each entity's first event time over the given streams (up to the snapshot)."""
    keys = model.entity.keys
    parts, params = [], {}
    for i, stream in enumerate(streams):
        source, p = history_source(con, stream, offline.files(stream.name), snapshot)
        if "files" in p:
            source = source.replace("$files", f"$files{i}")
            params[f"files{i}"] = p["files"]
        cols = ", ".join(f"CAST({sql_name(k)} AS VARCHAR) AS {sql_name(k)}" for k in keys)
        parts.append(f"SELECT {cols}, _event_time FROM {source}")
    key_list = ", ".join(sql_name(k) for k in keys)
    sql = (
        f"SELECT {key_list}, min(_event_time) AS first_seen FROM ({' UNION ALL '.join(parts)})"
        f" GROUP BY {key_list} ORDER BY {key_list}"
    )
    return con.sql(sql, params=params or None).to_arrow_table()


def build_spine(seen: pa.Table, times: list[int], keys: tuple[str, ...]) -> pd.DataFrame:
    """One row per (time, entity seen before that time), in time then key order."""
    frame = seen.to_pandas()
    rows = []
    for t in times:
        present = frame[frame["first_seen"] < t]
        part = present[list(keys)].copy()
        part["timestamp"] = t
        rows.append(part)
    spine = (
        pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=[*keys, "timestamp"])
    )
    spine["timestamp"] = pd.to_datetime(spine["timestamp"].astype("int64"), unit="us", utc=True)
    return spine


def label_values(
    con: duckdb.DuckDBPyConnection,
    label: Label,
    spine: pd.DataFrame,
    times_us: np.ndarray,
    files: list[str],
    snapshot: Mapping[str, int] | None,
) -> pd.Series:
    """The label of each spine row: the aggregate over ``[t, t + horizon)``, transformed."""
    table = {
        "_row": np.arange(len(spine), dtype=np.int64),
        "_t": times_us,
        "_end": times_us + label.horizon_us,
    }
    for k in label.entity.keys:
        dtype = ARROW_TYPES[label.stream.fields[k].dtype]
        table[k] = pa.array(spine[k].astype(str) if dtype == pa.string() else spine[k], dtype)
    parts = ["e._ts >= s._t"]
    if label.where is not None:
        parts.append(label.where.to_sql("e"))
    value = typed_aggregate_sql(label.aggregation, label.stream, " AND ".join(parts))
    field = label.aggregation.field
    fields = sorted(
        {
            *label.entity.keys,
            *([field] if field else []),
            *(label.where.fields() if label.where else ()),
        }
    )
    source, params = history_source(con, label.stream, files, snapshot)
    join = " AND ".join(f"e.{sql_name(k)} = s.{sql_name(k)}" for k in label.entity.keys)
    sql = f"""{events_cte(fields, source)}
SELECT s._row, {value} AS label
FROM _label_spine s LEFT JOIN e ON {join} AND e._ts >= s._t AND e._ts < s._end
GROUP BY s._row ORDER BY s._row
"""
    con.register("_label_spine", pa.table(table))
    try:
        result = con.sql(sql, params=params or None).to_arrow_table()
    finally:
        con.unregister("_label_spine")
    values = result["label"].to_pandas()
    if label.transform is not None:
        values = pd.Series(np.asarray(label.transform(values)), index=values.index)
    return values.reset_index(drop=True)
