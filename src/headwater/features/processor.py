"""The stream processor: log records in, per-entity tiles out, offsets committed with state."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from headwater.definitions.errors import HeadwaterError
from headwater.features.plan import FeatureSetPlan, entity_key
from headwater.log.base import (
    Log,
    LogError,
    Membership,
    Record,
    SoleMember,
    StreamPartition,
    partition_name,
)
from headwater.stores.online_base import OnlineStore, OwnershipLost

_LOGGER = logging.getLogger("headwater.processor")


class ProcessingError(HeadwaterError):
    """The stream processor cannot do what was asked."""


class TakenOver(ProcessingError):
    """Another processor claimed a partition while this one was processing it."""


@dataclass
class ProcessStats:
    events: int = 0
    batches: int = 0


@dataclass
class _Share:
    """A worker's partitions: those it owns (with the token of its claim), those whose write
    was refused and those last found caught up (each since when, ``time.monotonic``)."""

    owned: dict[StreamPartition, str] = field(default_factory=dict)
    refused: dict[StreamPartition, float] = field(default_factory=dict)
    idle: dict[StreamPartition, float] = field(default_factory=dict)

    def due(self, poll_seconds: float) -> list[tuple[StreamPartition, str]]:
        """The owned partitions to read now: busy ones, and idle ones not read lately."""
        now = time.monotonic()
        return [
            (where, token)
            for where, token in self.owned.items()
            if where not in self.idle or now - self.idle[where] >= poll_seconds
        ]

    def forget(self, where: StreamPartition) -> None:
        self.owned.pop(where, None)
        self.refused.pop(where, None)
        self.idle.pop(where, None)


class Processor:
    """Keeps the online store's feature-set states up to date with the log.

    Each log partition is processed on its own, with its own checkpoint per feature set.
    Each batch's new states and the feature sets' next offsets are written in one atomic
    store write, so a processor killed at any point restarts from the last committed offset
    and replays into exactly the state an uninterrupted run reaches (effects are idempotent
    because the replayed records overwrite the uncommitted work, never add to it).

    Several processors may share the partitions (``run_forever`` with a ``Membership``: the
    worker processes and hosts of one Kafka consumer group). The group decides who processes
    what, and a worker that dies has its partitions moved to the others, which resume from
    the checkpoints committed with the state: the dead worker's last, uncommitted batch left
    nothing behind and is simply replayed. But exactness cannot rest on the group, whose
    membership is advisory: a worker that stalls (a long pause, a network split from the
    broker) still believes it owns partitions the group gave to another, and may write a
    batch late. That write must not land. Tile updates add (``FeatureSetPlan.update`` merges
    each event into a partial: a count, a sum), so a batch applied on top of a state that
    already holds some of its events counts them twice, and the late checkpoint would also
    move back. Hence fencing: before it reads a partition's checkpoints, a processor claims
    them with a fresh token (``OnlineStore.claim``), and each of its writes applies only if
    its token still owns them, checked in the write's own atomic step. The store orders
    claims and writes, so once a new owner has claimed, no write of an earlier owner lands,
    and everything the new owner reads (checkpoints, then states) is exactly the committed
    state of its checkpoints. A worker whose write is refused drops the partition and claims
    it again only if the group still assigns it to it a session timeout later (by then a
    worker that lost it has heard so). This also heals a store that lost everything (a Redis
    restart): the owners are gone too, every write is refused, and the reclaimed partitions
    replay from offset 0.
    """

    def __init__(
        self,
        log: Log,
        online: OnlineStore,
        plans: Sequence[FeatureSetPlan],
        clock: Callable[[], int],
        batch_size: int = 20_000,
    ) -> None:
        self._log, self._online, self._clock = log, online, clock
        self.batch_size = batch_size
        self._by_stream: dict[str, list[FeatureSetPlan]] = {}
        for plan in plans:
            self._by_stream.setdefault(plan.stream.name, []).append(plan)

    @property
    def streams(self) -> list[str]:
        """The streams the feature sets read."""
        return list(self._by_stream)

    def lag(self) -> dict[str, int]:
        """Per feature set, how many log records are not yet processed."""
        out: dict[str, int] = {}
        for stream, plans in self._by_stream.items():
            for partition in range(self._log.partitions(stream)):
                end = self._log.end_offset(stream, partition)
                names = {p.id: partition_name(p.id, partition) for p in plans}
                done = self._online.checkpoints(list(names.values()))
                for plan in plans:
                    behind = max(0, end - done.get(names[plan.id], 0))
                    out[plan.id] = out.get(plan.id, 0) + behind
        return out

    def run_until_caught_up(
        self,
        progress: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> ProcessStats:
        """Process every partition until a read of each finds no record left (or ``stop`` is
        set), then return. Termination follows the reads, never the log's end offset: a
        Kafka broker's high watermark may lag. Raises ``TakenOver`` when another processor
        (a ``run_forever`` worker) claims a partition meanwhile; the work committed stays."""
        stats = ProcessStats()
        for stream in self._by_stream:
            for partition in range(self._log.partitions(stream)):
                where = (stream, partition)
                token = self._claim([where])[where]
                while not (stop is not None and stop.is_set()):
                    try:
                        n = self._process_batch(stream, partition, token)
                    except OwnershipLost:
                        raise TakenOver(
                            f"another processor took over partition {partition} of stream "
                            f"{stream!r} (a `headwater process --forever` worker, or a rebuild); "
                            "what this run committed stays. Let that processor do the work, "
                            "or stop it and run again"
                        ) from None
                    if n == 0:
                        break
                    stats.events += n
                    stats.batches += 1
                    if progress is not None:
                        progress(n)
        return stats

    def run_forever(
        self,
        stop: threading.Event,
        poll_seconds: float = 0.5,
        membership: Membership | None = None,
    ) -> ProcessStats:
        """Process continuously until ``stop`` is set; an unreachable log is waited out.

        ``membership`` is this worker's share of the partitions (default: all of them). It
        is polled between rounds of one batch per owned partition, so a revoked partition's
        batch in flight is finished (committed, or refused if already claimed) before the
        partition is given up. A partition found caught up is read again after
        ``poll_seconds``, so the busy ones do not wait for reads that find nothing. The
        caller closes the membership.
        """
        member = membership or SoleMember(self._log, self.streams)
        share = _Share()
        total = ProcessStats()
        while not stop.is_set():
            events = 0
            try:
                self._follow(member, share)
                for where, token in share.due(poll_seconds):
                    if stop.is_set():
                        break
                    n = self._visit(where, token, share)
                    events += n
                    total.batches += 1 if n else 0
            except LogError as exc:  # e.g. a Kafka broker restarting: the checkpoints hold
                _LOGGER.warning("cannot read the log, retrying in %ss: %s", poll_seconds, exc)
            total.events += events
            if events == 0:
                stop.wait(poll_seconds)
        return total

    def _visit(self, where: StreamPartition, token: str, share: _Share) -> int:
        """One batch of an owned partition; a refused write gives the partition up."""
        try:
            n = self._process_batch(*where, token)
        except OwnershipLost:
            stream, partition = where
            _LOGGER.warning(
                "partition %s of %r was claimed by another processor", partition, stream
            )
            share.owned.pop(where, None)
            share.refused[where] = time.monotonic()
            return 0
        if n:
            share.idle.pop(where, None)
        else:
            share.idle[where] = time.monotonic()
        return n

    def _follow(self, member: Membership, share: _Share) -> None:
        """Apply the membership's changes: drop revoked partitions, claim assigned ones, and
        claim again those whose write was refused if they are still assigned a session
        timeout later."""
        change = member.poll()
        for where in change.revoked:
            share.forget(where)
        assigned = member.assigned()
        now = time.monotonic()
        again = set()
        for where, since in list(share.refused.items()):
            if where not in assigned:
                del share.refused[where]
            elif now - since >= member.session_seconds:
                again.add(where)
                del share.refused[where]
        wanted = [w for w in change.assigned | again if w[0] in self._by_stream]
        if wanted:
            share.owned.update(self._claim(wanted))
            for where in wanted:
                share.idle.pop(where, None)
            _LOGGER.info("processing partitions %s", sorted(wanted))

    def clear(self) -> None:
        """Forget every feature set's online state and checkpoints (and owners), so the next
        run replays the whole log. A worker still running is refused its next write, and
        replays too once it claims its partitions again."""
        self._online.clear([plan.id for plans in self._by_stream.values() for plan in plans])

    def _claim(self, partitions: Iterable[StreamPartition]) -> dict[StreamPartition, str]:
        """Own the checkpoints of the partitions with a fresh token (one store write)."""
        token = uuid.uuid4().hex
        wanted = list(partitions)
        names = [
            partition_name(p.id, part) for stream, part in wanted for p in self._by_stream[stream]
        ]
        self._online.claim(names, token)
        return dict.fromkeys(wanted, token)

    def _process_batch(self, stream: str, partition: int, token: str) -> int:
        plans = self._by_stream[stream]
        # Partition 0 keeps the feature set's id as its checkpoint name, so the checkpoints
        # of a one-partition log (the embedded one) are those it always had.
        names = {p.id: partition_name(p.id, partition) for p in plans}
        committed = self._online.checkpoints(list(names.values()))
        done = {p.id: committed.get(names[p.id], 0) for p in plans}
        records = self._log.read(stream, min(done.values()), self.batch_size, partition)
        if not records:
            return 0
        rows = [orjson.loads(r.payload) for r in records]
        now = self._clock()
        states: dict[str, dict[str, bytes]] = {}
        for plan in plans:
            states[plan.id] = self._apply(plan, records, rows, done[plan.id], now)
        # The next offset follows the last record read, not a count: offsets may have gaps.
        end = records[-1].offset + 1
        checkpoints = {names[p.id]: max(end, done[p.id]) for p in plans}
        self._online.write(states, checkpoints, dict.fromkeys(checkpoints, token))
        return len(records)

    def _apply(
        self,
        plan: FeatureSetPlan,
        records: list[Record],
        rows: list[dict[str, Any]],
        from_offset: int,
        now: int,
    ) -> dict[str, bytes]:
        keys = plan.entity.keys
        pairs = [
            (rec, row) for rec, row in zip(records, rows, strict=True) if rec.offset >= from_offset
        ]
        if len(keys) == 1:  # the common case, without a call per event
            (k,) = keys
            todo = [(str(row[k]), rec, row) for rec, row in pairs]
        else:
            todo = [(entity_key([row[k] for k in keys]), rec, row) for rec, row in pairs]
        if not todo:
            return {}
        distinct = list(dict.fromkeys(key for key, _, _ in todo))
        loaded = self._online.get_many(plan.id, distinct)
        states = {key: plan.decode(blob) for key, blob in zip(distinct, loaded, strict=True)}
        time_field = plan.stream.time
        for key, rec, row in todo:
            plan.update(states[key], row, row[time_field], rec.offset)
        encoded = {}
        for key, state in states.items():
            plan.expire(state, now)
            encoded[key] = plan.encode(state)
        return encoded
