"""The figures the pages show that no other part of headwater computes: ingest counts since a
time (a binary search over the log's ingest times), dead letters by stream and reason (read
incrementally), events per day and field summaries from the archived history, predictions per
day. Each is kept in the sources' memo under the log offsets it read."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from headwater.definitions import Stream
from headwater.history.describe import describe_stream
from headwater.log.base import DEAD_LETTER_STREAM, Log, Record
from headwater.monitoring.monitor import PREDICTIONS, logged_predictions
from headwater.ui.html import DAY_US
from headwater.ui.sources import UiSources


def offsets(log: Log, stream: str) -> tuple[int, ...]:
    """The end offset of every partition of a stream (0 for a stream the log lacks)."""
    if stream not in log.streams():
        return (0,)
    return tuple(log.end_offset(stream, p) for p in range(log.partitions(stream)))


def latest_record(log: Log, stream: str) -> Record | None:
    """The record appended last to a stream (over its partitions, by ingest time)."""
    latest = None
    for partition, end in enumerate(offsets(log, stream)):
        if end:
            found = log.read(stream, end - 1, 1, partition)
            if found and (latest is None or found[0].ingest_time > latest.ingest_time):
                latest = found[0]
    return latest


def ingested_since(log: Log, stream: str, since_us: int) -> int:
    """How many records were appended to ``stream`` at or after ``since_us`` (ingest time).

    Appends come in ingest-time order per partition, so the first record at or after the
    time is found by bisection: a dozen one-record reads however long the log is."""
    if stream not in log.streams():
        return 0
    total = 0
    for partition in range(log.partitions(stream)):
        end = log.end_offset(stream, partition)
        low, high = 0, end
        while low < high:
            mid = (low + high) // 2
            found = log.read(stream, mid, 1, partition)
            if not found or found[0].ingest_time >= since_us:
                high = mid
            else:
                low = found[0].offset + 1
        total += end - low
    return total


@dataclass(frozen=True)
class DeadLetters:
    """Rejected events per stream and reason, up to ``offsets`` of the dead-letter stream."""

    offsets: tuple[int, ...] = ()
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)

    def of(self, stream: str) -> list[tuple[str, int]]:
        found = [(reason, n) for (s, reason), n in self.reasons.items() if s == stream]
        return sorted(found, key=lambda x: -x[1])

    def count(self, stream: str) -> int:
        return sum(n for _, n in self.of(stream))


def dead_letters(sources: UiSources) -> DeadLetters:
    """The dead-letter stream's counts, reading only what arrived since the last call."""
    log = sources.log
    end = offsets(log, DEAD_LETTER_STREAM)
    kept = sources.memo.peek("dead-letters") or DeadLetters()
    if kept.offsets == end:
        return kept
    reasons = Counter(kept.reasons)
    for partition, last in enumerate(end):
        start = kept.offsets[partition] if partition < len(kept.offsets) else 0
        while start < last:
            records = log.read(DEAD_LETTER_STREAM, start, 5_000, partition)
            if not records:
                break
            for record in records:
                doc = orjson.loads(record.payload)
                reasons[(str(doc.get("stream")), _short(str(doc.get("reason", ""))))] += 1
            start = records[-1].offset + 1
    found = DeadLetters(end, reasons)
    sources.memo.put("dead-letters", found)
    return found


def _short(reason: str) -> str:
    return reason if len(reason) <= 160 else reason[:159] + "…"


def history(sources: UiSources, stream: Stream) -> pa.Table:
    """A stream's archived history, read again only when the log grew."""
    key = offsets(sources.log, stream.name)
    return sources.memo.get(("history", stream.name), key, lambda: sources.training.history(stream))


def per_day(times_us: Any) -> list[tuple[str, float]]:
    """(UTC day, count) for every day between the first and the last time, zeros included."""
    if len(times_us) == 0:
        return []
    days = np.asarray(times_us, dtype="int64") // DAY_US
    first, last = int(days.min()), int(days.max())
    counts = np.bincount(days - first, minlength=last - first + 1)
    return [(_day(first + i), float(n)) for i, n in enumerate(counts)]


def _day(day: int) -> str:
    return str(np.datetime64(day, "D"))


@dataclass(frozen=True)
class StreamFigures:
    events: int
    per_day: list[tuple[str, float]]
    last_event_us: int | None
    last_ingest_us: int | None
    fields: pd.DataFrame  # describe_stream's rows
    values: dict[str, tuple[list[str], list[float]]]  # field -> histogram or top values


def stream_figures(sources: UiSources, stream: Stream) -> StreamFigures:
    key = offsets(sources.log, stream.name)
    return sources.memo.get(("stream", stream.name), key, lambda: _stream(sources, stream))


def _stream(sources: UiSources, stream: Stream) -> StreamFigures:
    table = history(sources, stream)  # brings the archive up to date first
    with ThreadPoolExecutor(1) as beside:  # DuckDB's summary while numpy and Arrow count
        described = beside.submit(describe_stream, stream, sources.training.engine)
        figures = _from_history(stream, table)
        fields = described.result()
    return StreamFigures(fields=fields, **figures)


def _from_history(stream: Stream, table: pa.Table) -> dict[str, Any]:
    times = table.column("_event_time").to_numpy() if table.num_rows else np.array([])
    ingests = table.column("_ingest_time") if table.num_rows else None
    values = {}
    for name, spec in stream.fields.items():
        if spec.pii or name == stream.time or name not in table.column_names:
            continue  # a PII field's values are never shown, not even as pseudonyms
        values[name] = distribution(table.column(name), spec.dtype.value)
    return {
        "events": table.num_rows,
        "per_day": per_day(times),
        "last_event_us": int(times.max()) if len(times) else None,
        "last_ingest_us": int(pc.max(ingests).as_py()) if ingests is not None else None,
        "values": values,
    }


def distribution(column: Any, dtype: str) -> tuple[list[str], list[float]]:
    """A histogram (numbers: 12 bins) or the 10 most frequent values (anything else)."""
    if dtype in ("int", "float"):
        numbers = pc.drop_null(column).to_numpy(zero_copy_only=False).astype(float)
        numbers = numbers[np.isfinite(numbers)]
        if numbers.size == 0:
            return [], []
        counts, edges = np.histogram(numbers, bins=12)
        labels = [f"{edges[i]:.3g}–{edges[i + 1]:.3g}" for i in range(len(counts))]
        return labels, [float(c) for c in counts]
    counted = pc.value_counts(pc.drop_null(pc.cast(column, pa.string())))
    if len(counted) == 0:
        return [], []
    counts = counted.field("counts").to_numpy()
    top = np.argsort(-counts, kind="stable")[:10]  # in numpy: a field may have 1M values
    values = counted.field("values").take(pa.array(top)).to_pylist()
    return [str(v) for v in values], [float(counts[i]) for i in top]


def predictions(sources: UiSources) -> pd.DataFrame:
    """Every logged prediction (shadows included), read again only when the log grew."""
    ctx = sources.monitor()
    ctx.flush_predictions()  # what this process logged, before the offsets key the read
    key = offsets(sources.log, PREDICTIONS)
    return sources.memo.get("predictions", key, lambda: logged_predictions(ctx, None, 0, 2**62))


def traffic(frame: pd.DataFrame, service: str | None = None) -> dict[str, list[tuple[str, float]]]:
    """Predictions per UTC day for each variant (and model version) of a service."""
    if frame.empty:
        return {}
    if service is not None:
        frame = frame[frame["service"] == service]
    out: dict[str, list[tuple[str, float]]] = {}
    for (variant, model, version, shadow), rows in frame.groupby(
        ["variant", "model", "model_version", "shadow"]
    ):
        name = f"{variant}: {model} v{version}" + (" (shadow)" if shadow else "")
        out[name] = per_day(rows["ts_us"].to_numpy())
    return out
