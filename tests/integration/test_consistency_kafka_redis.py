"""The consistency property on the scaled backends: with the log on Kafka (4 partitions, a
fresh Tansu broker per example) and the online store on Redis, online at t == training set
at t == brute force, for random events arriving late and out of order."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.log.kafka import KafkaLog, KafkaSettings
from headwater.stores.online.redis import RedisOnlineStore
from tests.kafka_broker import TansuBroker
from tests.unit.features.test_consistency import (
    DAY,
    SPAN,
    Engines,
    check_consistency,
    event_strategy,
)

REDIS = "redis://127.0.0.1:6379/10"


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,  # a fixed seed: the same examples in every run of CI
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    events=st.lists(event_strategy, min_size=1, max_size=40),
    query_offsets=st.lists(st.integers(1, SPAN + DAY), min_size=1, max_size=3, unique=True),
    seed=st.integers(0, 2**32 - 1),
)
def test_online_equals_offline_equals_brute_force_on_kafka_and_redis(events, query_offsets, seed):
    broker = TansuBroker().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            eng = Engines(
                Path(tmp),
                KafkaLog(KafkaSettings.from_url(broker.url(partitions=4, idle_ms=50))),
                RedisOnlineStore(REDIS, namespace=f"c{uuid.uuid4().hex[:10]}"),
            )
            try:
                check_consistency(eng, events, query_offsets, seed)
            finally:
                eng.close()
    finally:
        broker.stop()
