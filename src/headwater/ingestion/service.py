"""Ingestion: validate a batch, append the valid events durably, dead-letter the rest."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from headwater.definitions import HeadwaterError, Stream
from headwater.definitions.stream import did_you_mean
from headwater.ingestion.validate import Rejected, TimePolicy, validate
from headwater.log.base import DEAD_LETTER_STREAM, Log, NewRecord


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
    ) -> None:
        self._log, self._streams, self._clock = log, streams, clock
        self._max_future_us = max_future_us

    def stream(self, name: str) -> Stream:
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
        policy = TimePolicy(now, self._max_future_us)
        records: list[NewRecord] = []
        positions: list[int] = []
        result = IngestResult()
        dead: list[NewRecord] = []
        for i, raw in enumerate(events):
            result.offsets.append(None)
            try:
                event = validate(stream, raw, policy)
                payload = orjson.dumps(event.fields)
            except (Rejected, TypeError, orjson.JSONEncodeError) as exc:
                result.rejected.append(Rejection(i, str(exc)))
                dead.append(_dead_letter(stream_name, raw, str(exc), now))
                continue
            records.append(NewRecord(event.event_id, event.event_time, payload))
            positions.append(i)
        if dead:
            self._log.append(DEAD_LETTER_STREAM, dead, now)
        for position, appended in zip(
            positions, self._log.append(stream_name, records, now), strict=True
        ):
            result.offsets[position] = appended.offset
            if appended.duplicate:
                result.duplicates += 1
            else:
                result.accepted += 1
        return result


def _dead_letter(stream: str, raw: Any, reason: str, now: int) -> NewRecord:
    payload = orjson.dumps(
        {"stream": stream, "reason": reason, "event": raw},
        default=repr,
        option=orjson.OPT_NON_STR_KEYS,
    )
    return NewRecord(uuid.uuid4().hex, now, payload)
