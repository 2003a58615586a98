"""The log port: durable, ordered, partitioned sequences of events addressed by offset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from headwater.errors import HeadwaterError

DEAD_LETTER_STREAM = "_dead_letter"
ALERTS_STREAM = "alerts"  # alerts: the monitor's, and failed data tests of the processor
AUDIT_STREAM = "_audit"  # every write through the server: who, what, when (security/audit.py)


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


class Appended(NamedTuple):
    """Where an appended record landed; ``duplicate`` when its id was already in the stream.

    A named tuple: a log makes one per record while it holds the GIL, and a frozen
    dataclass took three times as long to build (a stall for the requests beside it)."""

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
    answers its existing offset with ``duplicate=True``; a Kafka log does so only for the
    records of a failed append that reached the broker all the same (see its adapter).
    """

    def append(
        self, stream: str, records: Sequence[NewRecord], ingest_time: int
    ) -> list[Appended]: ...

    def partitions(self, stream: str) -> int:
        """How many partitions the stream has (or will have once first appended to)."""
        ...

    def read(self, stream: str, start: int, limit: int, partition: int = 0) -> list[Record]: ...

    def read_payloads(
        self, stream: str, start: int, limit: int, partition: int = 0
    ) -> list[tuple[int, bytes]]:
        """The (offset, payload) of each record ``read`` returns, and nothing else: cheaper,
        for readers that need no more (the stream processor)."""
        ...

    def end_offset(self, stream: str, partition: int = 0) -> int:
        """The offset the next record appended to the partition will get."""
        ...

    def streams(self) -> list[str]: ...

    def close(self) -> None: ...


StreamPartition = tuple[str, int]  # (stream, partition)


@dataclass(frozen=True, slots=True)
class Rebalance:
    """What changed in a member's share since its last ``poll``: partitions taken away
    (revoked, or lost with the member's session) and partitions given to it."""

    revoked: frozenset[StreamPartition] = frozenset()
    assigned: frozenset[StreamPartition] = frozenset()


class Membership(Protocol):
    """One worker's share of the partitions of some streams, in a group of workers that share
    them: each partition is assigned to one member at a time, and members joining or leaving
    (or dying: after ``session_seconds`` without a sign of life) move partitions.

    ``poll`` keeps the membership alive and answers the changes since the last call; call it
    between batches, so a revocation is seen only once the batch in flight has finished.
    ``assigned`` is the member's current share, as last polled. Membership is advisory: a
    member that stalled may still believe it owns partitions it lost, so the state a member
    writes must be fenced elsewhere (the processor's owners in the online store).
    """

    session_seconds: float

    def poll(self) -> Rebalance: ...

    def assigned(self) -> frozenset[StreamPartition]: ...

    def close(self) -> None:
        """Leave the group (its partitions go to the other members at once)."""
        ...


@runtime_checkable
class GroupLog(Log, Protocol):
    """A log whose streams' partitions can be shared by a named group of workers."""

    def join(self, group: str, streams: Sequence[str]) -> Membership:
        """Become a member of ``group`` sharing the partitions of ``streams`` (created if
        missing, with the log's partition count)."""
        ...


class SoleMember:
    """The membership of a worker that is alone: every partition of the streams, always
    (a log without groups, e.g. the embedded one)."""

    session_seconds = 0.0

    def __init__(self, log: Log, streams: Sequence[str]) -> None:
        self._all = frozenset((s, p) for s in streams for p in range(log.partitions(s)))
        self._given = False

    def poll(self) -> Rebalance:
        if self._given:
            return Rebalance()
        self._given = True
        return Rebalance(assigned=self._all)

    def assigned(self) -> frozenset[StreamPartition]:
        return self._all if self._given else frozenset()

    def close(self) -> None:
        pass
