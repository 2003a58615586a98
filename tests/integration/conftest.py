"""Session fixtures of the integration tests: a Kafka-protocol broker on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kafka_broker import TansuBroker


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    """One Tansu broker for the session; tests keep apart by unique stream names."""
    broker = TansuBroker().start()
    yield broker
    broker.stop()
