"""The Kafka log beyond the shared contract: honest failures, the partitioner, and the stream
processor and archiver over partitions giving exactly what the embedded log gives.

Brokers are Tansu processes (``tests/kafka_broker.py``); a missing binary fails, never skips.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from headwater.definitions.types import from_micros
from headwater.definitions.windows import MINUTE
from headwater.features.catalog import FeatureCatalog
from headwater.history.archiver import Archiver
from headwater.ingestion.service import Ingestor
from headwater.log.base import Log, LogError, NewRecord, partition_name
from headwater.log.embedded import EmbeddedLog
from headwater.log.kafka import KafkaLog, KafkaSettings
from headwater.stores.offline.parquet import ParquetOfflineStore
from headwater.stores.online.sqlite import SqliteOnlineStore
from headwater.streaming.online import OnlineFeatures
from headwater.streaming.processor import Processor
from headwater.training.sets import TrainingSets
from tests import oracle
from tests.kafka_broker import TansuBroker
from tests.unit.features.test_consistency import DERIVED, FEATURES, NAMES, SPAN, T0, stream

PARTITIONS = 4


@pytest.fixture
def kafka_log(kafka_broker: TansuBroker) -> Iterator[KafkaLog]:
    url = kafka_broker.url(partitions=PARTITIONS, idle_ms=60, delivery_timeout_ms=5000)
    log = KafkaLog(KafkaSettings.from_url(url))
    yield log
    log.close()


@pytest.fixture
def own_broker() -> Iterator[TansuBroker]:
    """A broker of one test's own, to stop, or to use fixed stream names on."""
    broker = TansuBroker().start()
    yield broker
    broker.stop()


def _name() -> str:
    return f"s{uuid.uuid4().hex[:12]}"


def murmur2_partition(key: bytes, partitions: int) -> int:
    """Kafka's Java default partitioner: ``toPositive(murmur2(key)) % partitions``."""
    m, seed, mask = 0x5BD1E995, 0x9747B28C, 0xFFFFFFFF
    h = (seed ^ len(key)) & mask
    whole = len(key) // 4 * 4
    for i in range(0, whole, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    rest = key[whole:]
    if len(rest) == 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if rest:
        h ^= rest[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def test_keys_are_partitioned_as_kafkas_java_clients_do(kafka_log):
    stream_name = _name()
    keys = [f"user-{i}" for i in range(40)] + ["", "é", "a\x1fb"]
    records = [NewRecord(f"e{i}", 1, b"{}", key=k) for i, k in enumerate(keys)]
    appended = kafka_log.append(stream_name, records, ingest_time=1)
    assert [a.partition for a in appended] == [
        murmur2_partition(k.encode(), PARTITIONS) for k in keys
    ]


def test_event_ids_appended_again_after_a_success_are_not_deduplicated(kafka_log):
    stream_name = _name()
    record = NewRecord("same-id", 1, b"{}", key="k")
    first = kafka_log.append(stream_name, [record], ingest_time=1)
    second = kafka_log.append(stream_name, [record], ingest_time=2)
    assert not first[0].duplicate and not second[0].duplicate
    assert first[0].partition == second[0].partition
    got = kafka_log.read(stream_name, 0, 10, first[0].partition)
    assert [(r.event_id, r.ingest_time) for r in got] == [("same-id", 1), ("same-id", 2)]


def test_an_unreachable_broker_fails_appends_in_time_and_a_new_one_is_used(own_broker):
    broker = own_broker
    timeout_ms = 1500
    log = KafkaLog(KafkaSettings.from_url(broker.url(partitions=2, delivery_timeout_ms=timeout_ms)))
    try:
        known, fresh = _name(), _name()
        log.append(known, [NewRecord("a", 1, b"{}", key="k")], ingest_time=1)
        broker.stop()
        for stream_name in (known, fresh):  # a known topic, and one still to be created
            began = time.monotonic()
            with pytest.raises(LogError, match="Kafka"):
                log.append(stream_name, [NewRecord("b", 1, b"{}", key="k")], ingest_time=2)
            # bounded by the delivery timeout (plus the adapter's grace), so HTTP can say 503
            assert time.monotonic() - began < timeout_ms / 1000 + 8
        with pytest.raises(LogError, match="Kafka"):
            log.read(known, 0, 10)
        broker.start()  # an empty broker on the same address: the log carries on
        appended = log.append(known, [NewRecord("c", 1, b"{}", key="k")], ingest_time=3)
        got = log.read(known, 0, 10, appended[0].partition)
        assert [r.event_id for r in got] == ["c"]
        assert log.partitions(known) == 2
    finally:
        log.close()


def test_retrying_an_append_that_failed_but_landed_adds_no_second_copy(own_broker):
    """A stalled broker (SIGSTOP) holds an append's request; the append fails, and once the
    broker runs again it takes the request: the records are in the log although the append
    said no. Retrying them answers where they are (duplicates) and appends only the rest."""
    broker = own_broker
    log = KafkaLog(KafkaSettings.from_url(broker.url(partitions=3, delivery_timeout_ms=1500)))
    try:
        stream_name = _name()
        before = [NewRecord(f"b{i}", 1, b"{}", key=f"k{i}") for i in range(30)]
        log.append(stream_name, before, ingest_time=1)
        held = [NewRecord(f"h{i}", 1, b"{}", key=f"k{i}") for i in range(30)]
        broker.pause()
        try:
            with pytest.raises(LogError, match="retry it"):
                log.append(stream_name, held, ingest_time=2)
        finally:
            broker.resume()
        others = [NewRecord(f"n{i}", 1, b"{}", key=f"k{i}") for i in range(5)]
        fresh = [NewRecord(f"f{i}", 1, b"{}", fresh_id=True, key=f"k{i}") for i in range(3)]
        deadline = time.monotonic() + 30
        while True:  # the client retries until the log answers
            try:
                answer = log.append(stream_name, [*held, *others, *fresh], ingest_time=3)
                break
            except LogError:
                assert time.monotonic() < deadline
                time.sleep(0.5)
        seen = [r.event_id for p in range(3) for r in log.read(stream_name, 0, 1000, p)]
        assert sorted(seen) == sorted(r.event_id for r in [*before, *held, *others, *fresh])
        # the requests the broker held were taken when it ran again: the retry answered
        # their records as duplicates, where they are, and appended the rest of the batch
        landed = [r for r, a in zip(held, answer, strict=False) if a.duplicate]
        assert landed and not any(a.duplicate for a in answer[len(held) :])
        where = {
            r.event_id: (p, r.offset) for p in range(3) for r in log.read(stream_name, 0, 1000, p)
        }
        assert [(a.partition, a.offset) for a in answer] == [
            where[r.event_id] for r in [*held, *others, *fresh]
        ]
        # a later retry of the landed ones is still answered, never appended
        assert all(a.duplicate for a in log.append(stream_name, landed, ingest_time=4))
        assert log.end_offset(stream_name, answer[0].partition) == max(
            o + 1 for p, o in where.values() if p == answer[0].partition
        )
    finally:
        log.close()


# -- the processor and the archiver over partitions -----------------------------------------


class Pipeline:
    """Ingestion, processor, online features and training sets over one log, as Project
    wires them, with a controlled clock."""

    def __init__(self, log: Log, folder: Path) -> None:
        folder.mkdir()
        self.now = T0
        clock = lambda: self.now  # noqa: E731
        self.log = log
        self.online_store = SqliteOnlineStore(folder / "online.db")
        catalog = FeatureCatalog(FEATURES, [DERIVED])
        self.plans = catalog.plans
        self.ingestor = Ingestor(log, {stream.name: stream}, clock, max_future_us=0)
        self.processor = Processor(log, self.online_store, catalog.plans, clock, batch_size=500)
        self.online = OnlineFeatures(self.online_store, catalog, clock)
        offline = ParquetOfflineStore(folder / "offline")
        archiver = Archiver(log, offline, batch_size=700)
        self.training = TrainingSets.over(
            catalog, offline, archiver, {stream.name: stream}, threads=1
        )

    def ingest(self, events: list[dict], now: int) -> None:
        self.now = now
        for i in range(0, len(events), 500):
            result = self.ingestor.ingest(stream.name, events[i : i + 500])
            assert result.accepted == len(events[i : i + 500]), result.rejected[:3]

    def snapshot(self) -> dict[str, int]:
        return {
            partition_name(stream.name, p): self.log.end_offset(stream.name, p)
            for p in range(self.log.partitions(stream.name))
        }

    def close(self) -> None:
        self.log.close()
        self.online_store.close()


def _events(n: int, accounts: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    maybe = lambda value: None if rnd.random() < 0.1 else value  # noqa: E731
    return [
        {
            "account_id": f"acct-{rnd.randrange(accounts)}",
            "x": maybe(rnd.randrange(-400, 400) / 4),
            "n": maybe(rnd.randrange(-5, 10)),
            "cat": maybe(rnd.choice("abc")),
            "k": rnd.randrange(4),
            # coarse times: ties in event time within an entity are common
            "ts": from_micros(T0 + rnd.randrange(SPAN // MINUTE) * MINUTE),
        }
        for _ in range(n)
    ]


def test_processing_and_training_sets_over_partitions_equal_the_embedded_log(tmp_path, own_broker):
    accounts = 150
    events = _events(3000, accounts, seed=7)
    url = own_broker.url(partitions=PARTITIONS, idle_ms=60)
    kafka = Pipeline(KafkaLog(KafkaSettings.from_url(url)), tmp_path / "kafka")
    embedded = Pipeline(EmbeddedLog(tmp_path / "log.db"), tmp_path / "embedded")
    half = T0 + SPAN // 2
    first = [e for e in events if int(e["ts"].timestamp() * 1_000_000) < half]
    rest = [e for e in events if int(e["ts"].timestamp() * 1_000_000) >= half]
    try:
        snapshots = []
        for batch, now in ((first, half), (rest, T0 + SPAN + MINUTE)):
            for p in (kafka, embedded):
                p.ingest(batch, now)
                stats = p.processor.run_until_caught_up()
                assert stats.events == len(batch)
                snapshots.append(p.snapshot())
            rows = [{"account_id": f"acct-{i}", "scale": 2.0} for i in range(accounts)]
            got = kafka.online.get(rows, NAMES + ["ratio"])
            want = embedded.online.get(rows, NAMES + ["ratio"])
            assert got == want
        used = [kafka.log.end_offset(stream.name, p) for p in range(PARTITIONS)]
        assert sum(used) == len(events) and all(used)  # every partition has some
        assert set(kafka.processor.lag().values()) == {0}
        for plan in kafka.plans:
            names = [partition_name(plan.id, p) for p in range(PARTITIONS)]
            assert kafka.online_store.checkpoints(names) == dict(zip(names, used, strict=True))

        spine = pd.DataFrame(
            {
                "account_id": [f"acct-{i}" for i in range(accounts) for _ in range(3)],
                "timestamp": pd.to_datetime(
                    [T0 + j * SPAN // 2 + MINUTE for _ in range(accounts) for j in range(3)],
                    unit="us",
                    utc=True,
                ),
                "scale": 2.0,
            }
        )
        kafka_first, embedded_first = snapshots[0], snapshots[1]
        assert len(kafka_first) == PARTITIONS and list(embedded_first) == [stream.name]
        for snapshot_k, snapshot_e in ((None, None), (kafka_first, embedded_first)):
            got_rows = kafka.training.build(spine, NAMES, snapshot=snapshot_k).to_pylist()
            want_rows = embedded.training.build(spine, NAMES, snapshot=snapshot_e).to_pylist()
            for g, w in zip(got_rows, want_rows, strict=True):
                for name in NAMES:
                    assert oracle.same(g[name], w[name]), (name, g, w)
    finally:
        kafka.close()
        embedded.close()
