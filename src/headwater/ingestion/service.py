"""Ingestion: validate a batch, append the valid events durably, dead-letter the rest."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from headwater.definitions import HeadwaterError, Stream
from headwater.errors import did_you_mean
from headwater.features.plan import entity_key
from headwater.ingestion.columnar import check_table
from headwater.ingestion.protect import Protector
from headwater.ingestion.validate import Rejected, TimePolicy, validate
from headwater.log.base import DEAD_LETTER_STREAM, Log, NewRecord
from headwater.log.ids import new_id

DEAD_LETTER_TEXT = 65_536  # characters of an event kept when JSON cannot hold it


class UnknownStreamError(HeadwaterError, LookupError):
    """Events were sent to a stream the project does not declare."""


@dataclass(frozen=True)
class Rejection:
    index: int
    reason: str


@dataclass
class IngestResult:
    """What happened to each event of a batch."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    offsets: list[int | None] = field(default_factory=list)

    def merge(self, other: IngestResult, index_shift: int) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected += [Rejection(r.index + index_shift, r.reason) for r in other.rejected]
        self.offsets += other.offsets


class Ingestor:
    """Validates events against their streams and appends them to the log."""

    def __init__(
        self,
        log: Log,
        streams: Mapping[str, Stream],
        clock: Callable[[], int],
        max_future_us: int,
        protector: Protector | None = None,
    ) -> None:
        self._log, self._streams, self._clock = log, streams, clock
        self._max_future_us = max_future_us
        self._protector = protector or Protector(None)

    def check_pii_secret(self) -> None:
        """Refuse (PiiSecretError, saying what to do) when a stream has PII fields and no
        secret is configured: a server checks before it starts."""
        self._protector.check(self._streams)

    @property
    def streams(self) -> Mapping[str, Stream]:
        """The streams events can be ingested into, by name."""
        return self._streams

    def stream(self, name: str) -> Stream:
        if name == "predictions":
            raise UnknownStreamError(
                "stream 'predictions' is written by serving only; it cannot be ingested into"
            )
        try:
            return self._streams[name]
        except KeyError:
            raise UnknownStreamError(
                f"unknown stream {name!r}"
                + did_you_mean(name, list(self._streams))
                + f" (streams: {', '.join(sorted(self._streams)) or 'none'})"
            ) from None

    def ingest(self, stream_name: str, events: Iterable[Any]) -> IngestResult:
        """Append the valid events (acknowledged only once durable); dead-letter the others."""
        stream = self.stream(stream_name)
        now = self._clock()
        batch = _Batch(stream_name, now, self._protector)
        policy = TimePolicy(now, self._max_future_us)
        events = events if isinstance(events, list) else list(events)
        self._protector.prepare(stream, events)
        for i, raw in enumerate(events):
            batch.add_row(stream, i, raw, policy)
        return self._commit(batch)

    def ingest_table(self, stream_name: str, table: pa.Table) -> IngestResult:
        """``ingest`` for an Arrow table: whole columns are checked at once, and only rows the
        columnar check cannot vouch for go through the row-by-row validator."""
        stream = self.stream(stream_name)
        now = self._clock()
        policy = TimePolicy(now, self._max_future_us)
        checked = check_table(stream, table, policy)
        if checked is None:
            return self.ingest(stream_name, table.to_pylist())
        batch = _Batch(stream_name, now, self._protector, table.num_rows)
        self._protector.prepare(stream, checked.rows)
        for position, row, event_id, event_time in zip(
            checked.indices.tolist(),
            checked.rows,
            checked.event_ids,
            checked.event_times,
            strict=True,
        ):
            batch.add_valid(
                position,
                event_id,
                event_time,
                orjson.dumps(self._protector.fields(stream, row)),  # first: PII keys become
                _key(stream, row),  # pseudonyms, by which the log partitions
                checked.fresh_ids,
            )
        if len(checked.fallback):
            rest = table.take(pa.array(checked.fallback)).to_pylist()
            for position, raw in zip(checked.fallback.tolist(), rest, strict=True):
                batch.add_row(stream, position, raw, policy)
        return self._commit(batch)

    def _commit(self, batch: _Batch) -> IngestResult:
        if batch.dead:
            self._log.append(DEAD_LETTER_STREAM, batch.dead, batch.now)
        order = sorted(range(len(batch.records)), key=batch.positions.__getitem__)
        records = [batch.records[i] for i in order]
        positions = [batch.positions[i] for i in order]
        result = batch.result
        result.rejected.sort(key=lambda r: r.index)
        for position, appended in zip(
            positions, self._log.append(batch.stream, records, batch.now), strict=True
        ):
            result.offsets[position] = appended.offset
            if appended.duplicate:
                result.duplicates += 1
            else:
                result.accepted += 1
        return result


class _Batch:
    """One ingest call's valid records (with their positions) and rejections."""

    def __init__(self, stream: str, now: int, protector: Protector, size: int = 0) -> None:
        self.stream, self.now, self.protector = stream, now, protector
        self.records: list[NewRecord] = []
        self.positions: list[int] = []
        self.dead: list[NewRecord] = []
        self.result = IngestResult(offsets=[None] * size)

    def add_valid(
        self,
        position: int,
        event_id: str,
        event_time: int,
        payload: bytes,
        key: str,
        fresh_id: bool = False,
    ) -> None:
        self.records.append(NewRecord(event_id, event_time, payload, fresh_id, key))
        self.positions.append(position)

    def add_row(self, stream: Stream, position: int, raw: Any, policy: TimePolicy) -> None:
        if position >= len(self.result.offsets):
            self.result.offsets.extend([None] * (position + 1 - len(self.result.offsets)))
        try:
            event = validate(stream, raw, policy)
            # protected first: a key that is PII is partitioned by its pseudonym
            payload = orjson.dumps(self.protector.fields(stream, event.fields))
            key = _key(stream, event.fields)
        except (Rejected, TypeError, orjson.JSONEncodeError) as exc:
            self.result.rejected.append(Rejection(position, str(exc)))
            kept = self.protector.rejected(stream, raw)
            self.dead.append(_dead_letter(self.stream, kept, str(exc), self.now))
            return
        fresh = isinstance(raw, Mapping) and raw.get(stream.id_field) is None
        self.add_valid(position, event.event_id, event.event_time, payload, key, fresh)


def _key(stream: Stream, row: Mapping[str, Any]) -> str:
    """The partition key of an event: its stream key values, as entities address them, so a
    partitioned log keeps each key's events in one partition, in order."""
    return entity_key([row[k] for k in stream.keys])


def _dead_letter(stream: str, raw: Any, reason: str, now: int) -> NewRecord:
    """The dead-letter record of a rejected event; an event JSON cannot hold (nested past
    orjson's limit) is kept as the start of its text, so building the record never fails."""
    record = {"stream": stream, "reason": reason, "event": raw}
    try:
        payload = orjson.dumps(record, default=repr, option=orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError, RecursionError):
        record["event"] = None
        record["event_text"] = repr(raw)[:DEAD_LETTER_TEXT]
        payload = orjson.dumps(record)
    return NewRecord(new_id(), now, payload)
