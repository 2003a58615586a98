"""The stream processor: log records in, per-entity tiles out, offsets committed with state."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from headwater.features.plan import FeatureSetPlan, entity_key
from headwater.log.base import Log, LogError, Record, partition_name
from headwater.stores.online_base import OnlineStore

_LOGGER = logging.getLogger("headwater.processor")


@dataclass
class ProcessStats:
    events: int = 0
    batches: int = 0


class Processor:
    """Keeps the online store's feature-set states up to date with the log.

    Each log partition is processed on its own, with its own checkpoint per feature set.
    Each batch's new states and the feature sets' next offsets are written in one atomic
    store write, so a processor killed at any point restarts from the last committed offset
    and replays into exactly the state an uninterrupted run reaches (effects are idempotent
    because the replayed records overwrite the uncommitted work, never add to it).
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
        """Process records until a read of each partition finds none left (or ``stop`` is
        set), then return. Termination follows the reads, never the log's end offset: a
        Kafka broker's high watermark may lag."""
        stats = ProcessStats()
        for stream, plans in self._by_stream.items():
            for partition in range(self._log.partitions(stream)):
                while not (stop is not None and stop.is_set()):
                    n = self._process_batch(stream, partition, plans)
                    if n == 0:
                        break
                    stats.events += n
                    stats.batches += 1
                    if progress is not None:
                        progress(n)
        return stats

    def run_forever(self, stop: threading.Event, poll_seconds: float = 0.5) -> ProcessStats:
        """Process continuously until ``stop`` is set; an unreachable log is waited out."""
        total = ProcessStats()
        while not stop.is_set():
            try:
                stats = self.run_until_caught_up(stop=stop)
            except LogError as exc:  # e.g. a Kafka broker restarting: the checkpoints hold
                _LOGGER.warning("cannot read the log, retrying in %ss: %s", poll_seconds, exc)
                stats = ProcessStats()
            total.events += stats.events
            total.batches += stats.batches
            if stats.events == 0:
                stop.wait(poll_seconds)
        return total

    def _process_batch(self, stream: str, partition: int, plans: list[FeatureSetPlan]) -> int:
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
        self._online.write(states, {names[p.id]: max(end, done[p.id]) for p in plans})
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
