"""Replay: copy the events of one environment's log into another's, as they are (ids, event
times, order per key), optionally a time range, a hash sample of whole entities, and with PII
pseudonyms re-keyed under the target's secret.

A replay is checkpointed in the target's metadata store after every batch it appends: per
(source, stream, partition) the next source offset and the ends of the target's partitions
then. A replay killed between an append and its checkpoint finds, when it runs again, the ids
that append left in the target (they lie past the checkpointed ends: one batch at most) and
does not append them twice, so the target holds each event once on every log, Kafka included.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from headwater.definitions import Stream
from headwater.errors import HeadwaterError
from headwater.features.plan import entity_key
from headwater.log.base import Log, NewRecord, Record
from headwater.privacy.policies import PiiSecret
from headwater.stores.metadata.base import MetadataStore

CHECKPOINTS = "replay_checkpoints"  # the target metadata collection
BATCH = 5000
_SCALE = 2**64


class ReplayError(HeadwaterError):
    """A replay that must not run as asked (nothing is written)."""


@dataclass(frozen=True)
class ReplayOptions:
    """What to copy: ``since_us``/``until_us`` bound event times (``since <= t < until``);
    ``sample``: the share of entities copied whole (by a hash of each event's first key
    value, the same in every stream); ``rekey``: re-key pseudonyms under the target secret."""

    since_us: int | None = None
    until_us: int | None = None
    sample: float | None = None
    rekey: bool = False

    def __post_init__(self) -> None:
        if self.sample is not None and not 0 < self.sample <= 1:
            raise ReplayError(
                f"the entity sample must be above 0% and at most 100%, not {self.sample}"
            )
        since, until = self.since_us, self.until_us
        if since is not None and until is not None and since >= until:
            raise ReplayError("--since must be before --until")


@dataclass
class ReplayStats:
    copied: int = 0  # appended to the target
    filtered: int = 0  # outside the time range or the sample
    resumed: int = 0  # found in the target already, after an interrupted run
    streams: dict[str, int] = field(default_factory=dict)  # copied per stream
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.copied / self.seconds if self.seconds > 0 else 0.0

    def add(self, other: ReplayStats) -> None:
        self.copied += other.copied
        self.filtered += other.filtered
        self.resumed += other.resumed
        self.seconds += other.seconds
        for stream, n in other.streams.items():
            self.streams[stream] = self.streams.get(stream, 0) + n


def sampled(value: Any, share: float) -> bool:
    """Whether the entity of key value ``value`` is in a sample of ``share`` of them: a hash of
    the value, so one entity is in or out in every stream and every run.

    >>> sampled("u1", 1.0), sampled("u1", 0.5) == sampled("u1", 0.5)
    (True, True)
    """
    digest = hashlib.blake2b(str(value).encode(), digest_size=8, person=b"hw-sample").digest()
    return int.from_bytes(digest, "big") < share * _SCALE


class Replay:
    """Copies ``streams`` (each with its definition, or None for an internal stream copied
    as it is) from ``source`` into ``target``, checkpointed in ``checkpoints`` (the target's
    metadata) under the name ``origin`` (the source environment)."""

    def __init__(
        self,
        source: Log,
        target: Log,
        checkpoints: MetadataStore,
        streams: Mapping[str, Stream | None],
        origin: str,
        options: ReplayOptions,
        target_secret: PiiSecret | None = None,
        clock: Callable[[], int] = lambda: time.time_ns() // 1000,
        batch: int = BATCH,
    ) -> None:
        if batch < 1:
            raise ReplayError(f"the batch size must be at least 1, not {batch}")
        if options.rekey and target_secret is None:
            raise ReplayError("--rekey needs the target environment's PII secret")
        self.source, self.target, self._meta = source, target, checkpoints
        self.streams, self.origin, self.options = dict(streams), origin, options
        self._secret, self._clock, self._batch = target_secret, clock, batch

    # -- checkpoints ----------------------------------------------------------------------

    def _id(self, stream: str, partition: int) -> str:
        return f"{self.origin}|{stream}|{partition}"

    def checkpoints(self) -> dict[str, dict[str, Any]]:
        prefix = f"{self.origin}|"
        return {
            k: v for k, v in self._meta.get_records(CHECKPOINTS).items() if k.startswith(prefix)
        }

    def check(self, append: bool) -> None:
        """Refuse, before anything is written, a target that holds other events (unless
        ``append``) and a resumed replay whose options differ from its first run's."""
        done = self.checkpoints()
        options = asdict(self.options)
        for doc in done.values():
            if doc.get("options") != options:
                raise ReplayError(
                    f"an earlier replay from {self.origin!r} into this environment ran with "
                    f"other options ({_describe(doc.get('options', {}))}); run it again with "
                    "those, or replay into an empty environment"
                )
        if done or append:
            return
        holding = [s for s in self.streams if _holds(self.target, s)]
        if holding:
            raise ReplayError(
                f"the target already holds events of {', '.join(sorted(holding))}; replay into "
                "an empty environment, or add --append to add to them"
            )

    # -- copying --------------------------------------------------------------------------

    def lag(self) -> int:
        """Source records not yet copied (or filtered), over every stream and partition."""
        done = self.checkpoints()
        behind = 0
        for stream in self.streams:
            for p in range(self.source.partitions(stream)):
                start = done.get(self._id(stream, p), {}).get("next", 0)
                behind += max(0, self.source.end_offset(stream, p) - start)
        return behind

    def run(
        self,
        progress: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> ReplayStats:
        """Copy what the source holds now (from the checkpoints on); ``progress`` receives the
        number of source records handled by each batch."""
        stats = ReplayStats()
        started = time.perf_counter()
        done = self.checkpoints()
        present = set(self.source.streams())
        for stream in self.streams:
            if stream not in present or (stop is not None and stop.is_set()):
                continue
            mine = [done[k] for k in done if k.split("|")[1] == stream]
            ends = _latest(mine)
            landed = self._landed(stream, ends) if mine else set()
            for partition in range(self.source.partitions(stream)):
                checkpoint = done.get(self._id(stream, partition))
                start = 0 if checkpoint is None else int(checkpoint["next"])
                self._copy(stream, partition, start, ends, landed, stats, progress, stop)
        stats.seconds = time.perf_counter() - started
        return stats

    def _copy(
        self,
        stream: str,
        partition: int,
        start: int,
        ends: dict[int, int],
        landed: set[str],
        stats: ReplayStats,
        progress: Callable[[int], None] | None,
        stop: threading.Event | None,
    ) -> None:
        """Copy one source partition from ``start``; ``ends`` (updated) are the target's
        partition ends known, ``landed`` the ids an interrupted run left past them."""
        while stop is None or not stop.is_set():
            found = self.source.read(stream, start, self._batch, partition)
            if not found:
                return
            records = []
            for record in found:
                new = self._convert(stream, record)
                if new is None:
                    stats.filtered += 1
                elif new.event_id in landed:
                    stats.resumed += 1
                else:
                    records.append(new)
            if records:
                for a in self.target.append(stream, records, self._clock()):
                    ends[a.partition] = max(ends.get(a.partition, 0), a.offset + 1)
                stats.copied += len(records)
                stats.streams[stream] = stats.streams.get(stream, 0) + len(records)
            start = found[-1].offset + 1
            checkpoint = {
                "next": start,
                "ends": {str(p): e for p, e in ends.items()},
                "options": asdict(self.options),
            }
            self._meta.put_records([(CHECKPOINTS, self._id(stream, partition), checkpoint)])
            if progress is not None:
                progress(len(found))

    def _landed(self, stream: str, ends: Mapping[int, int]) -> set[str]:
        """The ids the target holds past ``ends``, the partition ends of the stream's latest
        checkpoint: what an append whose checkpoint a kill prevented left there (one batch at
        most), not to be appended twice."""
        ids: set[str] = set()
        for p in range(self.target.partitions(stream)):
            offset = ends.get(p, 0)
            while batch := self.target.read(stream, offset, BATCH, p):
                ids.update(r.event_id for r in batch)
                offset = batch[-1].offset + 1
        return ids

    def _convert(self, stream: str, record: Record) -> NewRecord | None:
        """The record as the target gets it; None when outside the range or the sample."""
        o = self.options
        if o.since_us is not None and record.event_time < o.since_us:
            return None
        if o.until_us is not None and record.event_time >= o.until_us:
            return None
        definition = self.streams[stream]
        if definition is None:  # an internal stream: copied whole, as it is
            return NewRecord(record.event_id, record.event_time, record.payload)
        fields = orjson.loads(record.payload)
        if o.sample is not None and not sampled(fields.get(definition.keys[0]), o.sample):
            return None
        payload = record.payload
        if o.rekey and self._secret is not None:
            changed = False
            for name, policy in definition.pii_policies.items():
                value = fields.get(name)
                if policy == "pseudonymize" and isinstance(value, str):
                    fields[name] = self._secret.pseudonym(value)
                    changed = True
            if changed:
                payload = orjson.dumps(fields)
        # after re-keying: a key that is PII is partitioned by its new pseudonym
        keys = [fields.get(k) for k in definition.keys]
        return NewRecord(record.event_id, record.event_time, payload, key=entity_key(keys))

    def follow(
        self,
        stop: threading.Event,
        interval: float = 0.2,
        progress: Callable[[int], None] | None = None,
        on_pass: Callable[[ReplayStats], None] | None = None,
    ) -> ReplayStats:
        """Copy continuously until ``stop``: the target stays in step with the source."""
        total = ReplayStats()
        while not stop.is_set():
            stats = self.run(progress, stop)
            total.add(stats)
            if on_pass is not None:
                on_pass(stats)
            if stats.copied == 0 and stats.filtered == 0:
                stop.wait(interval)
        return total


def _latest(checkpoints: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """The target's partition ends after the last checkpointed append of a stream (ends only
    grow, so the latest is the largest)."""
    ends: dict[int, int] = {}
    for doc in checkpoints:
        for p, end in doc.get("ends", {}).items():
            ends[int(p)] = max(ends.get(int(p), 0), int(end))
    return ends


def _holds(log: Log, stream: str) -> bool:
    return stream in log.streams() and any(
        log.end_offset(stream, p) > 0 for p in range(log.partitions(stream))
    )


def _describe(options: Mapping[str, Any]) -> str:
    shown = [f"{k}={v}" for k, v in options.items() if v not in (None, False)]
    return ", ".join(shown) or "everything, as it is"
