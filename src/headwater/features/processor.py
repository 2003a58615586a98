"""The stream processor: log records in, per-entity tiles out, offsets committed with state."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from headwater.features.plan import FeatureSetPlan, entity_key
from headwater.log.base import Log, Record
from headwater.stores.online_base import OnlineStore


@dataclass
class ProcessStats:
    events: int = 0
    batches: int = 0


class Processor:
    """Keeps the online store's feature-set states up to date with the log.

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
        out = {}
        for stream, plans in self._by_stream.items():
            end = self._log.end_offset(stream)
            done = self._online.checkpoints([p.id for p in plans])
            out.update({p.id: end - done.get(p.id, 0) for p in plans})
        return out

    def run_until_caught_up(self, progress: Callable[[int], None] | None = None) -> ProcessStats:
        """Process every record the log holds now, then return."""
        stats = ProcessStats()
        for stream, plans in self._by_stream.items():
            target = self._log.end_offset(stream)
            while (n := self._process_batch(stream, plans, target)) > 0:
                stats.events += n
                stats.batches += 1
                if progress is not None:
                    progress(n)
        return stats

    def run_forever(self, stop: threading.Event, poll_seconds: float = 0.5) -> ProcessStats:
        """Process continuously until ``stop`` is set."""
        total = ProcessStats()
        while not stop.is_set():
            stats = self.run_until_caught_up()
            total.events += stats.events
            total.batches += stats.batches
            if stats.events == 0:
                stop.wait(poll_seconds)
        return total

    def _process_batch(self, stream: str, plans: list[FeatureSetPlan], target: int) -> int:
        done = self._online.checkpoints([p.id for p in plans])
        start = min(done.get(p.id, 0) for p in plans)
        if start >= target:
            return 0
        records = self._log.read(stream, start, min(self.batch_size, target - start))
        if not records:
            return 0
        rows = [orjson.loads(r.payload) for r in records]
        now = self._clock()
        states: dict[str, dict[str, bytes]] = {}
        for plan in plans:
            states[plan.id] = self._apply(plan, records, rows, done.get(plan.id, 0), now)
        end = records[-1].offset + 1
        self._online.write(states, {p.id: max(end, done.get(p.id, 0)) for p in plans})
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
