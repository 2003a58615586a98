"""The Kafka log: each stream is a topic of a Kafka-protocol broker (Apache Kafka, Redpanda, Tansu).

The only module that imports confluent-kafka; the backend registry imports it lazily.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

from headwater.log.base import (
    DEAD_LETTER_STREAM,
    Appended,
    LogError,
    NewRecord,
    Rebalance,
    Record,
    StreamPartition,
)

try:
    from confluent_kafka import (
        Consumer,
        KafkaError,
        KafkaException,
        Message,
        Producer,
        TopicPartition,
    )
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ModuleNotFoundError(
        "the Kafka log needs the kafka extra: pip install 'headwater[kafka]'"
    ) from exc

# Streams read whole, in log order, by readers that know one partition (serving, monitoring).
SINGLE_PARTITION_STREAMS = frozenset({DEAD_LETTER_STREAM, "predictions", "alerts"})
ID_HEADER, TIME_HEADER, INGEST_HEADER = "hw.event_id", "hw.event_time", "hw.ingest_time"
_STEP_S = 0.02  # one wait of the read loop
_SCAN = 10_000  # messages per read while looking for the end
_GIVE_UP_S = 5.0  # beyond the delivery timeout, before an append stops waiting for reports
_LOGGER = logging.getLogger("headwater.log.kafka")
SESSION_TIMEOUT_MS = 6000  # a member silent this long is dead: its partitions move
_LANDED_KEPT = 100_000  # ids of in-doubt records found in the log, kept per stream for retries
_TOPIC_CHARS = re.compile(r"[A-Za-z0-9._-]*")


@dataclass(frozen=True)
class KafkaSettings:
    """The Kafka log's settings, from ``kafka://host:port[,host2:port2][?option=value&...]``.

    Options: ``partitions`` (of each topic the log creates; default 1), ``replication``
    (its replication factor; default -1, the broker's default), ``delivery_timeout_ms`` (how
    long an append may wait for the brokers before it fails; default 10000) and ``idle_ms``
    (how long a read waits for a first record before it answers that there is none;
    default 250), and ``prefix``: the start of every topic and consumer group name, the
    namespace of an environment on a shared cluster (``prefix=shop_staging.`` puts the stream
    ``clicks`` in the topic ``shop_staging.clicks``; a log sees only its prefix's topics).

    >>> KafkaSettings.from_url("kafka://k1:9092,k2:9092?partitions=4").partitions
    4
    >>> KafkaSettings.from_url("kafka://k1:9092?prefix=shop_staging.").topic("clicks")
    'shop_staging.clicks'
    """

    bootstrap: str
    partitions: int = 1
    replication: int = -1
    delivery_timeout_ms: int = 10_000
    idle_ms: int = 250
    prefix: str = ""

    @classmethod
    def from_url(cls, url: str) -> KafkaSettings:
        parsed = urlparse(url)
        if parsed.scheme != "kafka" or not parsed.netloc:
            raise LogError(f"{url!r} is not a Kafka URL; write kafka://host:port[,host:port]")
        options: dict[str, int] = {}
        prefix = ""
        for name, values in parse_qs(parsed.query, strict_parsing=bool(parsed.query)).items():
            if name == "prefix":
                prefix = values[-1]
                if not _TOPIC_CHARS.fullmatch(prefix):
                    raise LogError(
                        f"the Kafka log's prefix {prefix!r} may hold only letters, digits, "
                        "'.', '_' and '-'"
                    )
                continue
            if name not in {"partitions", "replication", "delivery_timeout_ms", "idle_ms"}:
                raise LogError(
                    f"unknown Kafka log option {name!r}; known: partitions, replication, "
                    "delivery_timeout_ms, idle_ms, prefix"
                )
            try:
                options[name] = int(values[-1])
            except ValueError:
                raise LogError(f"Kafka log option {name!r} must be an integer") from None
        settings = cls(parsed.netloc, **options, prefix=prefix)
        if settings.partitions < 1 or settings.delivery_timeout_ms < 1 or settings.idle_ms < 1:
            raise LogError("partitions, delivery_timeout_ms and idle_ms must be positive")
        return settings

    def topic(self, stream: str) -> str:
        """The topic of ``stream``."""
        return self.prefix + stream

    def stream(self, topic: str) -> str | None:
        """The stream of ``topic``; None for a topic outside the prefix."""
        return topic[len(self.prefix) :] if topic.startswith(self.prefix) else None

    def partitions_of(self, stream: str) -> int:
        """How many partitions the log creates the topic of ``stream`` with."""
        internal = stream in SINGLE_PARTITION_STREAMS or stream.startswith("_")
        return 1 if internal else self.partitions


class _Reader:
    """A consumer assigned to one partition by hand, kept open so reads continue its fetches.

    An empty read is conclusive once the broker has answered a fetch at the reader's position
    with end-of-partition (a fetch still in flight for an earlier position can hold the new
    one back) and ``idle_s`` has passed since the read began (a record appended just before
    the read is fetched within that time). Where no such answer comes in ``give_up_s`` (an
    unreachable broker; Tansu's silence at a start past the end), ``read`` answers None.
    """

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.lock = threading.Lock()
        self.position: tuple[str, int, int] | None = None  # (topic, partition, next offset)
        self.at_end = False  # the broker said the partition ends at ``position``

    def read(
        self, topic: str, partition: int, start: int, limit: int, idle_s: float, give_up_s: float
    ) -> list[Message] | None:
        """Up to ``limit`` messages from ``start``; the caller holds ``lock``."""
        if self.position != (topic, partition, start):
            self.consumer.assign([TopicPartition(topic, partition, start)])
            self.position, self.at_end = (topic, partition, start), False
        out: list[Message] = []
        began = last_came = time.monotonic()
        while len(out) < limit:
            for m in self.consumer.consume(min(limit - len(out), _SCAN), timeout=_STEP_S):
                err = m.error()
                if err is None:
                    # below ``start`` only after an offset reset to the earliest record, which
                    # a broker does for a start past the end as for one lost to retention
                    if (m.offset() or 0) >= start:
                        out.append(m)
                        self.at_end, last_came = False, time.monotonic()
                elif err.code() == KafkaError._PARTITION_EOF:
                    self.at_end = True
                else:
                    raise LogError(f"could not read {topic!r} [{partition}] from Kafka: {err}")
            now = time.monotonic()
            if out and (self.at_end or now - last_came >= idle_s):
                break
            if not out and self.at_end and now - began >= idle_s:
                break
            if not out and now - began >= give_up_s:
                return None
        if out:
            self.position = (topic, partition, (out[-1].offset() or 0) + 1)
        return out

    def close(self) -> None:
        with self.lock:
            self.consumer.close()


class KafkaLog:
    """A log whose streams are Kafka topics, created on first append.

    Appends go through one idempotent producer (``acks=all``) and return only after the
    broker confirmed every record; when it cannot within ``delivery_timeout_ms`` the append
    raises ``LogError`` and acknowledges nothing. A record's partition is the murmur2 hash of
    its key, as Kafka's Java clients choose it (records without a key go to any partition).
    The payload is the message value; the event id, event time and ingest time (microseconds)
    travel in headers, so ``Record`` round-trips exactly. Internal streams (``predictions``,
    ``alerts``, names starting with ``_``) get one partition: their readers read them whole.

    Retrying a failed append does not duplicate. An append that fails may still have reached
    the broker in part (a broker that stalls and recovers takes the requests it held), so its
    records are *in doubt*: the log remembers their ids and, per partition, the offset from
    which they would lie (the end it knew, seeded from the high watermark when it first
    appends to a stream). The next append that carries one of those ids first reads those
    partitions from there to the end, once, and answers every in-doubt record it finds there
    as ``duplicate=True`` at its offset, appending only the rest (ids found are kept, up to
    ``_LANDED_KEPT`` a stream, for later retries). This holds for retries through the same
    process; a request the broker takes only after that read (held up for longer than
    ``idle_ms`` after the broker answers again) can still repeat. Otherwise event ids are not
    deduplicated: an application that appends an event again after a success (a replay, a
    retry through another process) gets a second copy with ``duplicate=False``, as the
    idempotent producer only removes the duplicates of its own retries. Readers must tolerate
    repeats (the processor's effects are idempotent per offset, not per id). Transactions
    would hide a failed append's records from ``read_committed`` readers on Apache Kafka, but
    Tansu does not filter aborted records, so the log does not rely on them.

    Reads assign a consumer per (stream, partition) by hand and never commit: the processor
    keeps its offsets in its own store, atomically with its state. Offsets may have gaps
    (transaction markers). A read answers that there is nothing after ``start`` only once the
    broker said the partition ends there and ``idle_ms`` have passed; ``end_offset`` is the
    last record's offset + 1, found by reading to the end from the high watermark - 1.
    Brokers such as Tansu report a high watermark that lags by up to one batch, so neither
    counts on it.

    Usage: ``KafkaLog(KafkaSettings.from_url("kafka://127.0.0.1:9092?partitions=4"))``.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._timeout_s = settings.delivery_timeout_ms / 1000
        self._lock = threading.Lock()
        self._admin = AdminClient(self._client_config())
        self._producer: Producer | None = None
        self._topics: dict[str, int] = {}  # partition counts of the topics known to exist
        self._readers: dict[tuple[str, int], _Reader] = {}
        self._probe = _Reader(Consumer(self._consumer_config()))
        self._ends: dict[tuple[str, int], int] = {}  # lower bounds of end offsets, from records
        self._doubt_lock = threading.Lock()  # held while in-doubt records are looked for
        self._doubts: dict[str, _InDoubt] = {}
        self._seeded: set[str] = set()  # streams whose ends are known from the broker
        self._landed: dict[str, OrderedDict[str, Appended]] = {}

    def _client_config(self) -> dict:
        return {
            "bootstrap.servers": self.settings.bootstrap,
            "logger": _LOGGER,
            "socket.timeout.ms": self.settings.delivery_timeout_ms,
        }

    def _consumer_config(self) -> dict:
        return {
            **self._client_config(),
            "group.id": "headwater-log",  # never joined: partitions are assigned by hand
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            # a fetch at the end waits this long for records: well within a read's idle time
            "fetch.wait.max.ms": max(5, min(100, self.settings.idle_ms // 3)),
            "fetch.queue.backoff.ms": 0,
            "queued.max.messages.kbytes": 16384,
        }

    # -- appending --------------------------------------------------------------------------

    def append(self, stream: str, records: Sequence[NewRecord], ingest_time: int) -> list[Appended]:
        if not records:
            return []
        partitions = self._ensure_topic(stream)
        if stream not in self._seeded:
            self._seed_ends(stream, partitions)
        landed = self._settle_doubts(stream, records)
        if not landed:
            return self._produce(stream, records, ingest_time)
        fresh = [r for r in records if r.fresh_id or r.event_id not in landed]
        produced = iter(self._produce(stream, fresh, ingest_time) if fresh else [])
        return [
            next(produced) if r.fresh_id or r.event_id not in landed else landed[r.event_id]
            for r in records
        ]

    def _produce(
        self, stream: str, records: Sequence[NewRecord], ingest_time: int
    ) -> list[Appended]:
        producer = self._current_producer()
        delivery = _Delivery(len(records))
        # where this append's records will lie: at or after the ends known now
        ends = {p: e for (name, p), e in list(self._ends.items()) if name == stream}
        ingest = str(ingest_time).encode()
        topic = self.settings.topic(stream)
        for i, r in enumerate(records):
            _produce(
                producer,
                topic,
                value=r.payload,
                key=None if r.key is None else r.key.encode(),
                headers=[
                    (ID_HEADER, r.event_id.encode()),
                    (TIME_HEADER, str(r.event_time).encode()),
                    (INGEST_HEADER, ingest),
                ],
                timestamp=ingest_time // 1000,  # CreateTime, for other Kafka tools
                on_delivery=delivery.callback(i),
            )
        deadline = time.monotonic() + self._timeout_s + _GIVE_UP_S
        while not delivery.done.is_set() and time.monotonic() < deadline:
            producer.poll(_STEP_S)
        if delivery.error is not None or not delivery.done.is_set():
            self._drop_producer(producer, stream)
            self._note_doubts(stream, records, delivery, ends)
            reason = delivery.error or "no delivery report in time"
            raise LogError(
                f"could not append to stream {stream!r} on Kafka ({self.settings.bootstrap}): "
                f"{reason}; nothing of this append is acknowledged, retry it"
            )
        with self._lock:
            for a in delivery.results:
                where = (stream, a.partition)
                self._ends[where] = max(self._ends.get(where, 0), a.offset + 1)
        return delivery.results

    # -- failed appends: records in doubt -----------------------------------------------------

    def _note_doubts(
        self,
        stream: str,
        records: Sequence[NewRecord],
        delivery: _Delivery,
        ends: dict[int, int],
    ) -> None:
        """Remember the records of a failed append that may be in the log all the same (see
        the class); those the broker confirmed are known to be there. ``ends``: the ends of
        the stream's partitions known before the append."""
        everywhere = range(self._topics.get(stream) or self.settings.partitions_of(stream))
        with self._doubt_lock:
            doubt = self._doubts.setdefault(stream, _InDoubt())
            landed = self._landed.setdefault(stream, OrderedDict())
            for i, r in enumerate(records):
                if r.fresh_id:  # nobody can retry an id they were never told
                    continue
                if i in delivery.confirmed:
                    a = delivery.results[i]
                    landed[r.event_id] = Appended(a.offset, True, a.partition)
                    continue
                doubt.ids.add(r.event_id)
                partition = delivery.partitions.get(i, -1)
                for p in everywhere if partition < 0 else (partition,):
                    since = ends.get(p, 0)
                    doubt.since[p] = min(doubt.since.get(p, since), since)
            _trim(landed)

    def _settle_doubts(self, stream: str, records: Sequence[NewRecord]) -> dict[str, Appended]:
        """Where the records of ``records`` that an earlier failed append may have put in the
        log are: looked for once, by the first append that retries one of them."""
        if stream not in self._doubts and not self._landed.get(stream):
            return {}
        with self._doubt_lock:
            ids = {r.event_id for r in records if not r.fresh_id}
            doubt = self._doubts.get(stream)
            landed = self._landed.setdefault(stream, OrderedDict())
            if doubt is not None and not doubt.ids.isdisjoint(ids):
                for partition, start in sorted(doubt.since.items()):
                    while found := self.read(stream, start, _SCAN, partition):
                        for rec in found:
                            if rec.event_id in doubt.ids and rec.event_id not in landed:
                                landed[rec.event_id] = Appended(rec.offset, True, partition)
                        start = found[-1].offset + 1
                del self._doubts[stream]
                _trim(landed)
            return {i: landed[i] for i in ids if i in landed}

    def _current_producer(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = Producer(
                    {
                        **self._client_config(),
                        "enable.idempotence": True,
                        "acks": "all",
                        "message.timeout.ms": self.settings.delivery_timeout_ms,
                        "partitioner": "murmur2_random",
                    }
                )
            return self._producer

    def _drop_producer(self, producer: Producer, stream: str) -> None:
        """Forget a failed producer (its idempotence state may be fatal or stale) and the
        topic it wrote to, so the next append starts afresh, e.g. on a replaced broker."""
        producer.purge()
        producer.poll(0)
        with self._lock:
            if self._producer is producer:
                self._producer = None
            self._topics.pop(stream, None)

    def _ensure_topic(self, stream: str) -> int:
        known = self._topics.get(stream)
        if known is not None:
            return known
        topics = self._refresh_topics()
        if stream not in topics:
            name = self.settings.topic(stream)
            topic = NewTopic(name, self.settings.partitions_of(stream), self.settings.replication)
            future = self._admin.create_topics([topic], request_timeout=self._timeout_s)[name]
            try:
                future.result(self._timeout_s + _GIVE_UP_S)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise LogError(f"could not create a Kafka topic for {stream!r}: {exc}") from exc
            deadline = time.monotonic() + self._timeout_s
            while stream not in (topics := self._refresh_topics()):
                if time.monotonic() > deadline:
                    raise LogError(f"the Kafka topic of {stream!r} was created but is not visible")
                time.sleep(_STEP_S)
        return topics[stream]

    def _seed_ends(self, stream: str, partitions: int) -> None:
        """Lower bounds of the ends of a stream's partitions the log has not written to yet
        (from where a failed append's records would lie): the high watermarks, less a batch
        for brokers whose watermark is off by one."""
        for p in range(partitions):
            if (stream, p) in self._ends:
                continue
            try:
                _, high = self._probe.consumer.get_watermark_offsets(
                    TopicPartition(self.settings.topic(stream), p),
                    timeout=self._timeout_s,
                    cached=False,
                )
            except KafkaException as exc:
                raise LogError(f"cannot reach Kafka at {self.settings.bootstrap}: {exc}") from exc
            self._note_end(stream, p, max(0, high - _SCAN))
        self._seeded.add(stream)

    def _refresh_topics(self) -> dict[str, int]:
        try:
            metadata = self._admin.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            raise LogError(f"cannot reach Kafka at {self.settings.bootstrap}: {exc}") from exc
        topics = {
            stream: len(t.partitions)
            for name, t in metadata.topics.items()
            if not name.startswith("__")
            and t.error is None
            and (stream := self.settings.stream(name)) is not None
        }
        with self._lock:
            self._topics = topics
        return topics

    # -- reading ----------------------------------------------------------------------------

    def partitions(self, stream: str) -> int:
        count = self._topics.get(stream)
        if count is None:
            count = self._refresh_topics().get(stream)
        return self.settings.partitions_of(stream) if count is None else count

    def read(self, stream: str, start: int, limit: int, partition: int = 0) -> list[Record]:
        return [_record(m, partition) for m in self._messages(stream, start, limit, partition)]

    def read_payloads(
        self, stream: str, start: int, limit: int, partition: int = 0
    ) -> list[tuple[int, bytes]]:
        # the headers (id, times) are not decoded: most of what reading a record costs
        messages = self._messages(stream, start, limit, partition)
        return [(m.offset() or 0, m.value() or b"") for m in messages]

    def _messages(self, stream: str, start: int, limit: int, partition: int) -> list[Message]:
        if limit <= 0 or not self._has(stream, partition):
            return []
        reader = self._reader(stream, partition)
        with reader.lock:
            messages = reader.read(
                self.settings.topic(stream), partition, start, limit, self._idle_s, self._give_up_s
            )
        if messages is None:
            self._refresh_topics()  # raises LogError when the brokers cannot be reached
            return []
        if messages:
            self._note_end(stream, partition, (messages[-1].offset() or 0) + 1)
        return messages

    def end_offset(self, stream: str, partition: int = 0) -> int:
        if not self._has(stream, partition):
            return 0
        known = self._ends.get((stream, partition), 0)
        try:
            _, high = self._probe.consumer.get_watermark_offsets(
                TopicPartition(self.settings.topic(stream), partition),
                timeout=self._timeout_s,
                cached=False,
            )
        except KafkaException as exc:
            raise LogError(f"cannot reach Kafka at {self.settings.bootstrap}: {exc}") from exc
        # Scan from the record before the reported end, one batch at most when the watermark
        # lags; where it is past the true end there is nothing there, so scan from ``known``.
        for start in dict.fromkeys((max(known, high) - 1, known)):
            if start >= 0 and (last := self._last_offset(stream, partition, start)) is not None:
                return self._note_end(stream, partition, last + 1)
        return known

    def _last_offset(self, stream: str, partition: int, start: int) -> int | None:
        """The offset of the partition's last record at or after ``start``, if any."""
        last = None
        with self._probe.lock:
            while True:
                topic = self.settings.topic(stream)
                batch = self._probe.read(
                    topic, partition, start, _SCAN, self._idle_s, self._give_up_s
                )
                if batch is None:
                    self._refresh_topics()  # raises LogError when the brokers are unreachable
                if not batch:
                    return last
                last = batch[-1].offset() or 0
                start = last + 1
                if len(batch) < _SCAN:  # the read stopped at the end
                    return last

    @property
    def _idle_s(self) -> float:
        return self.settings.idle_ms / 1000

    @property
    def _give_up_s(self) -> float:
        """How long a read waits for any answer from the broker."""
        return min(self._timeout_s, max(1.0, 10 * self._idle_s))

    def _note_end(self, stream: str, partition: int, end: int) -> int:
        with self._lock:
            end = max(self._ends.get((stream, partition), 0), end)
            self._ends[stream, partition] = end
        return end

    def _has(self, stream: str, partition: int) -> bool:
        count = self._topics.get(stream)
        if count is None:
            count = self._refresh_topics().get(stream)
        if count is None:
            return False
        if not 0 <= partition < count:
            raise LogError(f"stream {stream!r} has {count} partitions; there is no {partition}")
        return True

    def _reader(self, stream: str, partition: int) -> _Reader:
        with self._lock:
            reader = self._readers.get((stream, partition))
            if reader is None:
                reader = _Reader(Consumer(self._consumer_config()))
                self._readers[stream, partition] = reader
            return reader

    def streams(self) -> list[str]:
        return sorted(self._refresh_topics())

    # -- sharing partitions -----------------------------------------------------------------

    def join(self, group: str, streams: Sequence[str]) -> GroupMember:
        """Join the consumer group ``group`` on the topics of ``streams`` (see ``GroupMember``);
        missing topics are created first, with the log's partition count."""
        for stream in streams:
            self._ensure_topic(stream)
        consumer = Consumer(
            {
                **self._client_config(),
                "group.id": self.settings.prefix + group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": 1000,
                # eager: every rebalance revokes every partition, then assigns them anew
                "partition.assignment.strategy": "roundrobin",
                "auto.offset.reset": "latest",  # it never reads: the partitions stay paused
                "topic.metadata.refresh.interval.ms": 10_000,  # new partitions join in time
            }
        )
        return GroupMember(consumer, list(streams), SESSION_TIMEOUT_MS / 1000, self.settings)

    def close(self) -> None:
        with self._lock:
            readers, self._readers = list(self._readers.values()), {}
            producer, self._producer = self._producer, None
        for reader in [*readers, self._probe]:
            reader.close()
        if producer is not None:
            producer.flush(self._timeout_s)


class GroupMember:
    """A member of a Kafka consumer group, used only to share partitions: the group assigns
    them, but the member never reads through the group or commits offsets to it (readers
    assign partitions by hand, and the processor keeps its offsets in its own store).

    The protocol is eager (``roundrobin``): a rebalance revokes every member's partitions,
    then assigns them all anew. Cooperative rebalancing would only spare the members whose
    partitions stay put a short pause, which matters where a partition's state lives in the
    worker; here it lives in the online store, and a new owner only reads a checkpoint.
    (Tansu 0.6 also leaves partitions unassigned under ``cooperative-sticky``.) Each assigned
    partition is paused at once, so the member's consumer fetches nothing. Callbacks run in
    ``poll``, on the caller's thread, so a revocation is seen between two of its batches.
    """

    def __init__(
        self,
        consumer: Consumer,
        streams: list[str],
        session_seconds: float,
        settings: KafkaSettings,
    ) -> None:
        self.session_seconds = session_seconds
        self._consumer = consumer
        self._settings = settings
        self._revoked: set[StreamPartition] = set()
        self._assigned: set[StreamPartition] = set()
        self._share: frozenset[StreamPartition] = frozenset()
        consumer.subscribe(
            [settings.topic(s) for s in streams],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.assign(partitions)
        if partitions:
            consumer.pause(partitions)
        given = self._streams(partitions)
        self._assigned |= given
        self._revoked -= given
        self._share |= given

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        taken = self._streams(partitions)
        self._revoked |= taken - self._assigned  # given and taken back before a poll: no news
        self._assigned -= taken
        self._share -= taken

    def _streams(self, partitions: list[TopicPartition]) -> set[StreamPartition]:
        return {
            (stream, tp.partition)
            for tp in partitions
            if (stream := self._settings.stream(tp.topic)) is not None
        }

    def poll(self) -> Rebalance:
        try:
            message = self._consumer.poll(0)
        except KafkaException as exc:
            raise LogError(f"the consumer group failed: {exc}") from exc
        if message is not None and message.error() is not None:
            _LOGGER.warning("consumer group: %s", message.error())
        change = Rebalance(frozenset(self._revoked), frozenset(self._assigned))
        self._revoked, self._assigned = set(), set()
        return change

    def assigned(self) -> frozenset[StreamPartition]:
        return self._share

    def close(self) -> None:
        self._consumer.close()  # leaves the group: its partitions move at once


@dataclass
class _InDoubt:
    """The records of a stream's failed appends that may be in the log: their ids, and per
    partition the offset from which they would lie."""

    ids: set[str] = field(default_factory=set)
    since: dict[int, int] = field(default_factory=dict)


def _trim(landed: OrderedDict[str, Appended]) -> None:
    while len(landed) > _LANDED_KEPT:
        landed.popitem(last=False)


class _Delivery:
    """The delivery reports of one append, filled in by the producer's callbacks."""

    def __init__(self, count: int) -> None:
        self.results: list[Appended] = [Appended(-1, False)] * count
        self.confirmed: set[int] = set()  # indexes of the records the broker took
        self.partitions: dict[int, int] = {}  # the partition of each record reported on
        self.error: str | None = None
        self.done = threading.Event()
        self._pending = count
        self._lock = threading.Lock()  # another thread's poll may serve these callbacks

    def callback(self, index: int) -> Callable[[KafkaError | None, Message], None]:
        def delivered(err: KafkaError | None, msg: Message) -> None:
            with self._lock:
                partition = msg.partition()
                self.partitions[index] = -1 if partition is None else partition
                if err is not None:
                    self.error = self.error or err.str()
                else:
                    self.results[index] = Appended(msg.offset() or 0, False, partition or 0)
                    self.confirmed.add(index)
                self._pending -= 1
                if self._pending == 0:
                    self.done.set()

        return delivered


def _produce(producer: Producer, topic: str, **message: Any) -> None:
    while True:
        try:
            producer.produce(topic, **message)
            return
        except BufferError:  # the local queue is full: let deliveries drain it
            producer.poll(_STEP_S)


def _record(m: Message, partition: int) -> Record:
    headers = dict(m.headers() or ())
    offset = m.offset() or 0
    _, timestamp_ms = m.timestamp()
    ingest = headers.get(INGEST_HEADER)
    ingest_time = int(ingest) if ingest is not None else timestamp_ms * 1000
    event_id = headers.get(ID_HEADER)
    event_time = headers.get(TIME_HEADER)
    if isinstance(event_id, bytes):
        event_id = event_id.decode()
    return Record(
        offset,
        event_id if event_id is not None else f"{m.topic()}:{partition}:{offset}",
        int(event_time) if event_time is not None else ingest_time,
        ingest_time,
        m.value() or b"",
        partition,
    )
