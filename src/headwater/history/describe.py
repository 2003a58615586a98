"""Summary statistics of a stream's fields or a feature's values, for the model builder."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pandas as pd

from headwater.definitions import Stream
from headwater.definitions.types import from_micros
from headwater.history.engines.base import QueryEngine
from headwater.history.engines.sorted_history import copy_name
from headwater.log.base import Log
from headwater.privacy.mock import mock_value
from headwater.stores.offline.base import OfflineStore

ENCRYPTED = "ENCRYPTED"  # what a person sees of an encrypted PII field (`pii reveal` decrypts)


def describe_stream(stream: Stream, engine: QueryEngine) -> pd.DataFrame:
    """One row per field: count, null rate, distinct values (exact), min, max, mean; times as
    UTC datetimes, and no min or max of a PII field (they would be values of it)."""
    rows = []
    for stats in engine.field_stats(stream):
        field = stream.fields[stats["field"]]
        total = stats["count"]
        low, high, mean = stats["min"], stats["max"], stats["mean"]
        if field.dtype.value == "timestamp":
            low, high, mean = (
                None if v is None else from_micros(int(v)) for v in (low, high, mean)
            )
        if field.pii:
            low = high = None
        rows.append(
            {
                "field": stats["field"],
                "type": field.dtype.value,
                "pii": field.pii,
                "count": total,
                "null_rate": 1 - stats["present"] / total if total else 0.0,
                "distinct": stats["distinct"],
                "min": low,
                "max": high,
                "mean": mean,
            }
        )
    return pd.DataFrame(rows)


def describe_copies(
    offline: OfflineStore, stream: Stream, keys: list[tuple[str, ...]]
) -> list[str]:
    """A line per sorted copy of the stream's history: its keys, rows and the log offsets it
    covers (or that the next archive run builds it)."""
    lines = []
    for fields in keys:
        name = copy_name(fields)
        about = offline.sorted_about(stream.name, name)
        if about is None:
            lines.append(f"sorted copy by {name}: none yet (the next archive run builds it)")
            continue
        covered = ", ".join(f"partition {p} below {end:,}" for p, end in about["covered"].items())
        lines.append(f"sorted copy by {name}: {about['rows']:,} rows ({covered})")
    return lines


def histogram(values: pd.Series, bins: int = 10, width: int = 40) -> list[str]:
    """A text histogram of numeric values, one line per bin."""
    numbers = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    if numbers.size == 0:
        return ["(no values)"]
    counts, edges = np.histogram(numbers, bins=bins)
    top = counts.max() or 1
    return [
        f"{edges[i]:>12.3f} .. {edges[i + 1]:<12.3f} {'#' * int(width * c / top):<{width}} {c}"
        for i, c in enumerate(counts)
    ]


def describe_values(values: pd.Series) -> dict[str, Any]:
    numeric = pd.api.types.is_numeric_dtype(values)
    return {
        "count": int(len(values)),
        "null_rate": float(values.isna().mean()) if len(values) else 0.0,
        "distinct": int(values.dropna().astype(str).nunique()),  # exact; nulls not a value
        "min": values.min() if numeric and values.notna().any() else None,
        "max": values.max() if numeric and values.notna().any() else None,
        "mean": float(values.mean()) if numeric and values.notna().any() else None,
    }


def latest_events(log: Log, stream: Stream, n: int = 10, *, mock: bool = True) -> list[dict]:
    """The latest ``n`` events of a stream as its log holds them (oldest first), each with
    ``_event_id`` and ``_event_time``. With ``mock``, a pseudonymized PII field shows a
    realistic fake stable per pseudonym instead (named in the event's ``_mock``) and an
    encrypted one shows ``ENCRYPTED`` (named in ``_masked``): what a person may look at."""
    found = []
    for p in range(log.partitions(stream.name)):
        end = log.end_offset(stream.name, p)
        found += log.read(stream.name, max(0, end - n), n, p)
    found.sort(key=lambda r: (r.ingest_time, r.event_time))
    events = []
    for record in found[-n:]:
        event: dict[str, Any] = {"_event_id": record.event_id, "_event_time": record.event_time}
        event.update(orjson.loads(record.payload))
        if mock:
            present = {
                name: policy
                for name, policy in stream.pii_policies.items()
                if event.get(name) is not None
            }
            masked = [name for name, policy in present.items() if policy == "pseudonymize"]
            for name in masked:
                event[name] = mock_value(name, event[name])
            event["_mock"] = masked
            hidden = [name for name, policy in present.items() if policy != "pseudonymize"]
            for name in hidden:
                event[name] = ENCRYPTED
            if hidden:
                event["_masked"] = hidden
        events.append(event)
    return events
