"""The examples a model learns from: a spine of (entity, time) rows and their labels.

A label at t aggregates the entity's events in ``[t, t + horizon)``; features only see events
before t, so no feature sees what the label sees. Rows whose label window is not complete at
the snapshot's time are never used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from headwater.definitions import Label, Model
from headwater.history.engines.base import QueryEngine, Snapshot
from headwater.history.schema import ARROW_TYPES


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
    engine: QueryEngine,
    label: Label,
    spine: pd.DataFrame,
    times_us: np.ndarray,
    snapshot: Snapshot | None,
) -> pd.Series:
    """The label of each spine row: the aggregate over ``[t, t + horizon)``, transformed.
    Training (the spine's rows) and monitoring (the predictions' entities and times) both
    take their labels from here."""
    keys = {}
    for k in label.entity.keys:
        dtype = ARROW_TYPES[label.stream.fields[k].dtype]
        keys[k] = pa.array(spine[k].astype(str) if dtype == pa.string() else spine[k], dtype)
    aggregates = engine.label_aggregates(label, pa.table(keys), times_us, snapshot)
    values = aggregates.to_pandas()
    if label.transform is not None:
        values = pd.Series(np.asarray(label.transform(values)), index=values.index)
    return values.reset_index(drop=True)
