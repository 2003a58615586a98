"""The consistency property on the scaled backends: with the log on Kafka (4 partitions, a
fresh Tansu broker per example) and the online store on Redis, online at t == training set
at t == brute force, for random events arriving late and out of order."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.features.catalog import FeatureCatalog
from headwater.features.history import Archiver
from headwater.features.offline import TrainingSets
from headwater.features.online import OnlineFeatures
from headwater.features.processor import Processor
from headwater.ingestion.service import Ingestor
from headwater.log.kafka import KafkaLog, KafkaSettings
from headwater.stores.offline_parquet import ParquetOfflineStore
from headwater.stores.online_redis import RedisOnlineStore
from tests.kafka_broker import TansuBroker
from tests.unit.features.test_consistency import (
    DAY,
    DERIVED,
    FEATURES,
    SPAN,
    T0,
    check_consistency,
    event_strategy,
    stream,
)

REDIS = "redis://127.0.0.1:6379/10"


class ScaledEngines:
    """Kafka log + Redis online store + Parquet history, wired as Project wires them."""

    def __init__(self, folder: Path, broker: TansuBroker) -> None:
        self.now = T0
        clock = lambda: self.now  # noqa: E731
        self.log = KafkaLog(KafkaSettings.from_url(broker.url(partitions=4, idle_ms=50)))
        self.online_store = RedisOnlineStore(REDIS, namespace=f"c{uuid.uuid4().hex[:10]}")
        self.offline_store = ParquetOfflineStore(folder / "offline")
        self.catalog = FeatureCatalog(FEATURES, [DERIVED])
        self.ingestor = Ingestor(self.log, {stream.name: stream}, clock, max_future_us=0)
        self.processor = Processor(
            self.log, self.online_store, self.catalog.plans, clock, batch_size=7
        )
        self.online = OnlineFeatures(self.online_store, self.catalog, clock)
        self.training = TrainingSets(
            self.catalog,
            self.offline_store,
            Archiver(self.log, self.offline_store, batch_size=11),
            {stream.name: stream},
            threads=1,
        )

    def logged(self) -> list[tuple[int, int, dict]]:
        """Every event with its offset; an account's events share one partition, so the
        (time, offset) order of ties within an account is the log's."""
        out = []
        for partition in range(self.log.partitions(stream.name)):
            out += [
                (r.event_time, r.offset, orjson.loads(r.payload))
                for r in self.log.read(stream.name, 0, 1_000_000, partition)
            ]
        return out

    def close(self) -> None:
        self.log.close()
        self.online_store.close()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(event_strategy, min_size=1, max_size=40),
    query_offsets=st.lists(st.integers(1, SPAN + DAY), min_size=1, max_size=3, unique=True),
    seed=st.integers(0, 2**32 - 1),
)
def test_online_equals_offline_equals_brute_force_on_kafka_and_redis(events, query_offsets, seed):
    broker = TansuBroker().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            eng = ScaledEngines(Path(tmp), broker)
            try:
                check_consistency(eng, events, query_offsets, seed)
            finally:
                eng.close()
    finally:
        broker.stop()
