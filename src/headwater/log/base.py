"""The log port: durable, ordered, per-stream sequences of events addressed by offset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from headwater.definitions.errors import HeadwaterError

DEAD_LETTER_STREAM = "_dead_letter"


class LogError(HeadwaterError):
    """The log could not be reached or refused an operation."""


@dataclass(frozen=True, slots=True)
class NewRecord:
    """An event to append: its id (for idempotence), event time and JSON payload."""

    event_id: str
    event_time: int
    payload: bytes
    fresh_id: bool = False  # the id was just generated (a UUID): no earlier copy can exist


@dataclass(frozen=True, slots=True)
class Record:
    """An event as the log holds it."""

    offset: int
    event_id: str
    event_time: int
    ingest_time: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Appended:
    """Where an appended record landed; ``duplicate`` when its id was already in the stream."""

    offset: int
    duplicate: bool


class Log(Protocol):
    """A durable log.

    Contract: ``append`` returns only after the records are durable (a process crash right
    after it returns loses nothing); offsets of a stream start at 0 and grow by one per record
    with no gaps; an event id already present in the stream is not appended again, and its
    existing offset is returned with ``duplicate=True``; ``read`` returns records in offset
    order starting at ``start``.
    """

    def append(
        self, stream: str, records: Sequence[NewRecord], ingest_time: int
    ) -> list[Appended]: ...

    def read(self, stream: str, start: int, limit: int) -> list[Record]: ...

    def end_offset(self, stream: str) -> int:
        """The offset the next appended record of the stream will get."""
        ...

    def streams(self) -> list[str]: ...

    def close(self) -> None: ...
