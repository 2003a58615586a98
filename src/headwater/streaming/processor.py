"""The stream processor: log records in, per-entity tiles out, offsets committed with state."""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from headwater.errors import HeadwaterError
from headwater.features.plan import FeatureSetPlan, entity_key
from headwater.log.base import (
    Log,
    LogError,
    Membership,
    SoleMember,
    StreamPartition,
    partition_name,
)
from headwater.stores.online.base import OnlineStore, OwnershipLost
from headwater.streaming.datatests import AlertWriter, DataTests

_LOGGER = logging.getLogger("headwater.processor")
T = TypeVar("T")


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

    Speed: a processor keeps the decoded states of the partitions it owns between batches
    (up to ``cached_states`` in all, the least recently written dropped first), valid while
    its claim holds and dropped when a batch fails. Behind a backlog it commits a partition
    every ``commit_seconds`` rather than every batch: the states its batches changed since
    the last commit stay in memory (never dropped from the cache until written), then are
    written once, with the checkpoints of the last batch, in one atomic write as before. A
    batch shorter than ``batch_size`` (the processor has caught up) is committed at once,
    so a processor that keeps up commits every batch, and so does one whose uncommitted
    states pass the cache's share of a partition. A crash loses at most the uncommitted
    batches, which the next owner replays from the committed checkpoints exactly as an
    uninterrupted run would. Each feature set applies a batch in one loop compiled for its
    features (``FeatureSetPlan.update_many``), from offsets and payloads only
    (``Log.read_payloads``), and a partition's next batch is read (in a thread) while its
    current one is processed.
    """

    def __init__(
        self,
        log: Log,
        online: OnlineStore,
        plans: Sequence[FeatureSetPlan],
        clock: Callable[[], int],
        batch_size: int = 100_000,
        cached_states: int = 200_000,
        commit_seconds: float = 5.0,
        checks: DataTests | None = None,
    ) -> None:
        """``checks``: the data tests (expectations of streams and features) every batch is
        checked against; failures go to the alerts stream."""
        self._log, self._online, self._clock = log, online, clock
        self.checks = checks if checks else None
        self.check_alerts = AlertWriter(log, clock)
        self.batch_size = batch_size
        self.cached_states = cached_states
        self.commit_seconds = commit_seconds
        self._cache: dict[StreamPartition, _StateCache] = {}
        self._by_stream: dict[str, list[FeatureSetPlan]] = {}
        for plan in plans:
            self._by_stream.setdefault(plan.stream.name, []).append(plan)

    def settings(self) -> dict[str, float]:
        """The settings a processor of another process needs to work as this one does."""
        return {
            "batch_size": self.batch_size,
            "cached_states": self.cached_states,
            "commit_seconds": self.commit_seconds,
        }

    def configure(self, settings: dict[str, float]) -> None:
        """Take ``settings`` (of ``settings()``)."""
        self.batch_size = int(settings["batch_size"])
        self.cached_states = int(settings["cached_states"])
        self.commit_seconds = float(settings["commit_seconds"])

    @property
    def streams(self) -> list[str]:
        """The streams the feature sets read."""
        return list(self._by_stream)

    def lag(self) -> dict[str, int]:
        """Per feature set, how many log records are not yet processed."""
        ends = {
            (stream, partition): self._log.end_offset(stream, partition)
            for stream in self._by_stream
            for partition in range(self._log.partitions(stream))
        }
        names = {
            (plan.id, partition): partition_name(plan.id, partition)
            for (stream, partition) in ends
            for plan in self._by_stream[stream]
        }
        done = self._online.checkpoints(list(names.values()))  # one read for every set
        out: dict[str, int] = {}
        for (stream, partition), end in ends.items():
            for plan in self._by_stream[stream]:
                behind = max(0, end - done.get(names[(plan.id, partition)], 0))
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
        (a ``run_forever`` worker) claims a partition meanwhile; the work committed stays.

        The partitions take turns, a batch each, and each one's next batch is read while
        its current one is processed, so reads (and a Kafka log's wait at the end of a
        partition) overlap the work and each other. Everything processed is committed
        before it returns, also when ``stop`` ends it."""
        stats = ProcessStats()
        pending = [(s, p) for s in self._by_stream for p in range(self._log.partitions(s))]
        tokens: dict[StreamPartition, str] = {}
        ahead = _ReadAhead(self._log, len(pending))
        try:
            with _collector_paused():  # for the whole run (see there), not batch by batch
                while pending:
                    for where in list(pending):
                        if stop is not None and stop.is_set():
                            for stopped, token in tokens.items():
                                self._taken_over(self._commit, stopped, token)
                            return stats
                        if where not in tokens:
                            tokens.update(self._claim([where]))
                        n = self._taken_over(self._process_batch, where, tokens[where], ahead)
                        if n == 0:
                            pending.remove(where)
                            continue
                        stats.events += n
                        stats.batches += 1
                        if progress is not None:
                            progress(n)
        finally:
            ahead.close()
        return stats

    @staticmethod
    def _taken_over(step: Callable[..., T], where: StreamPartition, token: str, *args: Any) -> T:
        """``step(where, token, ...)``, a refused write raised as ``TakenOver``."""
        try:
            return step(where, token, *args)
        except OwnershipLost:
            stream, partition = where
            raise TakenOver(
                f"another processor took over partition {partition} of stream "
                f"{stream!r} (a `headwater process --forever` worker, or a rebuild); "
                "what this run committed stays. Let that processor do the work, "
                "or stop it and run again"
            ) from None

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
        partition is given up (and what was processed of it committed). A partition found
        caught up is read again after ``poll_seconds``, so the busy ones do not wait for
        reads that find nothing. What was processed is committed when ``stop`` ends it. The
        caller closes the membership.
        """
        member = membership or SoleMember(self._log, self.streams)
        share = _Share()
        total = ProcessStats()
        ahead = _ReadAhead(self._log, 8)  # a busy partition's next batch is read meanwhile
        try:
            while not stop.is_set():
                events = 0
                try:
                    self._follow(member, share)
                    for where, token in share.due(poll_seconds):
                        if stop.is_set():
                            break
                        n = self._visit(where, token, share, ahead)
                        events += n
                        total.batches += 1 if n else 0
                except LogError as exc:  # e.g. a Kafka broker restarting: checkpoints hold
                    _LOGGER.warning("cannot read the log, retrying in %ss: %s", poll_seconds, exc)
                total.events += events
                if events == 0:
                    stop.wait(poll_seconds)
            for where, token in list(share.owned.items()):
                try:
                    self._commit_or_give_up(where, token)
                except Exception as exc:  # a store out of reach: the next owner replays it
                    _LOGGER.warning("could not commit partition %s at the stop: %s", where, exc)
        finally:
            ahead.close()
        return total

    def _visit(
        self, where: StreamPartition, token: str, share: _Share, ahead: _ReadAhead | None = None
    ) -> int:
        """One batch of an owned partition; a refused write gives the partition up."""
        try:
            n = self._process_batch(where, token, ahead)
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
            token = share.owned.get(where)
            if token is not None:
                self._commit_or_give_up(where, token)
            share.forget(where)
            self._cache.pop(where, None)
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
        self._cache.clear()
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

    def _cache_of(self, where: StreamPartition, token: str) -> _StateCache:
        cache = self._cache.get(where)
        if cache is None or cache.token != token:  # claimed anew: what it held may be stale
            cache = self._cache[where] = _StateCache(token)
        return cache

    def _process_batch(
        self, where: StreamPartition, token: str, ahead: _ReadAhead | None = None
    ) -> int:
        """One batch of a partition, committed with what its earlier batches left
        uncommitted when it is short (caught up), ``commit_seconds`` after the first of them,
        or when the uncommitted states pass the partition's share of the cache. A partition
        found caught up (no record read) is committed too."""
        cache = self._cache_of(where, token)
        try:
            with _collector_paused():
                n = self._process_cached(where, ahead, cache)
                if cache.since is not None and (
                    n < self.batch_size
                    or time.monotonic() - cache.since >= self.commit_seconds
                    or cache.uncommitted() > self._cache_share()
                ):
                    self._write(where, cache)
            return n
        except BaseException:
            # the batch's states were changed in place but not written (or maybe written):
            # the next batch reads them (and the checkpoints) from the store again
            self._cache.pop(where, None)
            raise

    def _commit(self, where: StreamPartition, token: str) -> None:
        """Write what was processed of a partition and not yet committed."""
        cache = self._cache.get(where)
        if cache is not None and cache.token == token and cache.since is not None:
            self._write(where, cache)

    def _commit_or_give_up(self, where: StreamPartition, token: str) -> None:
        """Commit a partition this processor leaves; if another has claimed it, the other
        replays what this one processed since its last commit."""
        try:
            self._commit(where, token)
        except OwnershipLost:
            stream, partition = where
            _LOGGER.info("partition %s of %r was claimed by another processor", partition, stream)

    def _cache_share(self) -> int:
        """How many states each owned partition's cache keeps."""
        return self.cached_states // max(1, len(self._cache))

    def _write(self, where: StreamPartition, cache: _StateCache) -> None:
        """The cache's uncommitted states (expired now) and checkpoints, in one store write
        fenced by the cache's claim. A failed write drops the cache (its states were
        expired in place, and may or may not be stored)."""
        assert cache.done is not None
        stream, partition = where
        try:
            now = self._clock()
            encoded = {
                plan.id: plan.encode_many(cache.dirty.get(plan.id, {}), now)
                for plan in self._by_stream[stream]
            }
            checkpoints = {partition_name(i, partition): n for i, n in cache.done.items()}
            self._online.write(encoded, checkpoints, dict.fromkeys(checkpoints, cache.token))
        except BaseException:
            self._cache.pop(where, None)
            raise
        cache.committed(self._cache_share())

    def _process_cached(
        self, where: StreamPartition, ahead: _ReadAhead | None, cache: _StateCache
    ) -> int:
        """A batch applied to the cached states (not written); the records read."""
        stream, partition = where
        plans = self._by_stream[stream]
        if cache.done is None:
            # Partition 0 keeps the feature set's id as its checkpoint name, so the
            # checkpoints of a one-partition log (the embedded one) are those it always had.
            names = {p.id: partition_name(p.id, partition) for p in plans}
            committed = self._online.checkpoints(list(names.values()))
            cache.done = {p.id: committed.get(names[p.id], 0) for p in plans}
        done = cache.done
        start = min(done.values())
        read = ahead.take(where, start) if ahead is not None else None
        if read is None:
            read = self._log.read_payloads(stream, start, self.batch_size, partition)
        if not read:
            return 0
        if ahead is not None:  # the next batch is read while this one is processed
            ahead.start(where, read[-1][0] + 1, self.batch_size)
        offsets = [offset for offset, _ in read]
        rows = [orjson.loads(payload) for _, payload in read]
        checks = self.checks
        failed = checks.on_events(stream, rows) if checks is not None else []
        now = self._clock() if checks is not None else 0
        for plan in plans:
            changed = self._apply(plan, offsets, rows, done[plan.id], cache)
            cache.changed(plan.id, changed)
            if checks is not None:
                failed += checks.on_states(plan, changed, now)
        if failed:
            at = f"{stream} partition {partition}, offsets {offsets[0]}-{offsets[-1]}"
            self.check_alerts.write(failed, at)
        # The next offset follows the last record read, not a count: offsets may have gaps.
        end = offsets[-1] + 1
        cache.processed({p.id: max(end, done[p.id]) for p in plans})
        return len(read)

    def _apply(
        self,
        plan: FeatureSetPlan,
        offsets: list[int],
        rows: list[dict[str, Any]],
        from_offset: int,
        cache: _StateCache,
    ) -> dict[str, dict[str, Any]]:
        """The batch's events applied to the states of their entities: those changed."""
        if offsets[0] < from_offset:  # this feature set has some of the batch already
            first = next((i for i, o in enumerate(offsets) if o >= from_offset), len(offsets))
            offsets, rows = offsets[first:], rows[first:]
        if not offsets:
            return {}
        keys = plan.entity.keys
        if len(keys) == 1:  # the common case, without a call per event
            (k,) = keys
            entities = [str(row[k]) for row in rows]
        else:
            entities = [entity_key([row[k] for k in keys]) for row in rows]
        known = cache.states.get(plan.id, {})
        states: dict[str, dict[str, Any]] = {}
        missing = []
        for key in dict.fromkeys(entities):
            state = known.get(key)
            if state is None:
                missing.append(key)
            else:
                states[key] = state
        if missing:
            loaded = self._online.get_many(plan.id, missing)
            for key, blob in zip(missing, loaded, strict=True):
                states[key] = plan.decode(blob)
        plan.update_many(states, entities, rows, offsets)
        return states


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while batches are applied (then as it was).

    A batch allocates a dict per record and a list per new tile, and Python's collector
    counts allocations: over a batch of 100k records it ran its young passes thousands of
    times and its full passes (over every cached state: millions of objects) dozens of
    times, about a quarter of the processing time. Records and states hold no reference
    cycles, so reference counting frees them anyway; the collector finds nothing. Once it
    is back on, its next young pass goes over what the batches left (new states and tiles):
    ``run_until_caught_up`` pauses it for the whole run, so that pass comes once."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _StateCache:
    """A partition's decoded states, kept between batches by the processor that owns it,
    so the next batch need not read and decode them again: what its last committed write
    stored, plus what the batches since have changed (``dirty``, never dropped before they
    are written) up to the offsets in ``done``. Valid for one claim (``token``): a new
    claim starts empty, and a batch that fails drops the cache. After a commit, the least
    recently written states go beyond ``limit``."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.states: dict[str, dict[str, dict[str, Any]]] = {}
        self.dirty: dict[str, dict[str, dict[str, Any]]] = {}
        self.done: dict[str, int] | None = None  # per feature set, its next offset
        self.since: float | None = None  # when the first uncommitted batch was processed

    def changed(self, plan_id: str, states: dict[str, dict[str, Any]]) -> None:
        """A batch's changed states (the cached ones changed in place, others new)."""
        self.states.setdefault(plan_id, {}).update(states)
        self.dirty.setdefault(plan_id, {}).update(states)

    def processed(self, done: dict[str, int]) -> None:
        self.done = done
        if self.since is None:
            self.since = time.monotonic()

    def uncommitted(self) -> int:
        return sum(len(states) for states in self.dirty.values())

    def committed(self, limit: int) -> None:
        """The uncommitted states were written: keep the most recently written ``limit``
        of each feature set."""
        for plan_id, written in self.dirty.items():
            states = self.states[plan_id]
            for key in written:
                states.pop(key, None)  # so the order of the dict is that of the last writes
            states.update(written)
            if len(states) > limit:
                for key in list(itertools.islice(states, len(states) - limit)):
                    del states[key]
        self.dirty, self.since = {}, None


class _ReadAhead:
    """Reads of partitions' next batches, in threads, while the current ones are processed.

    A read started at one offset is used only by a batch that starts there (the checkpoints
    it is read from may have moved otherwise); any other is dropped. Reading is I/O (a
    Kafka consumer's fetches and end-of-partition wait, SQLite's query), so it overlaps the
    processing, and the reads of several partitions overlap one another."""

    def __init__(self, log: Log, partitions: int) -> None:
        self._log = log
        self._pool = ThreadPoolExecutor(max(1, min(partitions, 8)), "headwater-read")
        self._reads: dict[StreamPartition, tuple[int, Future[list[tuple[int, bytes]]]]] = {}

    def start(self, where: StreamPartition, offset: int, limit: int) -> None:
        stream, partition = where
        future = self._pool.submit(self._log.read_payloads, stream, offset, limit, partition)
        self._reads[where] = (offset, future)

    def take(self, where: StreamPartition, offset: int) -> list[tuple[int, bytes]] | None:
        """The read started at ``offset`` (waiting for it), or None where there is none."""
        started = self._reads.pop(where, None)
        if started is None or started[0] != offset:
            return None
        return started[1].result()

    def close(self) -> None:
        """Wait for the reads in flight, dropping what they read."""
        self._reads.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
