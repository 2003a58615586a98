"""The log port: durable, ordered, partitioned sequences of events addressed by offset."""

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
    """An event to append: its id (for idempotence), event time and JSON payload.

    ``key`` is the canonical string of the event's stream key values: a partitioned log sends
    every record of one key to the same partition, so one entity's events keep their order;
    a log with one partition ignores it.
    """

    event_id: str
    event_time: int
    payload: bytes
    fresh_id: bool = False  # the id was just generated (a UUID): no earlier copy can exist
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """An event as the log holds it; ``offset`` counts within its partition."""

    offset: int
    event_id: str
    event_time: int
    ingest_time: int
    payload: bytes
    partition: int = 0


@dataclass(frozen=True, slots=True)
class Appended:
    """Where an appended record landed; ``duplicate`` when its id was already in the stream."""

    offset: int
    duplicate: bool
    partition: int = 0


def partition_name(name: str, partition: int) -> str:
    """The name of something kept per partition (a checkpoint, a snapshot offset): the name
    itself for partition 0, so a log with one partition keeps the names it always had.

    >>> partition_name("user@orders#1a2b", 0), partition_name("user@orders#1a2b", 3)
    ('user@orders#1a2b', 'user@orders#1a2b@p3')
    """
    return name if partition == 0 else f"{name}@p{partition}"


class Log(Protocol):
    """A durable log of streams, each split into ``partitions(stream)`` partitions.

    Contract: ``append`` returns only after the records are durable (a process crash right
    after it returns loses nothing) and raises ``LogError`` without acknowledging anything
    when it cannot make them so; records with the same ``key`` go to the same partition;
    offsets of a partition start at 0 and grow with each record, in append order, but may
    have gaps, so a reader resumes at ``last offset read + 1`` and never counts on density;
    ``read`` returns records of one partition in offset order starting at the first offset
    ``>= start``, at most ``limit`` of them, and an empty list only when it found none after
    ``start`` (a reader is caught up when a read returns nothing).

    Event ids: the embedded log appends an id already present in the stream no more and
    answers its existing offset with ``duplicate=True``; a Kafka log cannot, and always
    answers ``duplicate=False`` (see its adapter).
    """

    def append(
        self, stream: str, records: Sequence[NewRecord], ingest_time: int
    ) -> list[Appended]: ...

    def partitions(self, stream: str) -> int:
        """How many partitions the stream has (or will have once first appended to)."""
        ...

    def read(self, stream: str, start: int, limit: int, partition: int = 0) -> list[Record]: ...

    def end_offset(self, stream: str, partition: int = 0) -> int:
        """The offset the next record appended to the partition will get."""
        ...

    def streams(self) -> list[str]: ...

    def close(self) -> None: ...
