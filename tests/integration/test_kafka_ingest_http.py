"""HTTP ingest on a Kafka log: 503 while the broker cannot be reached, and every acknowledged
event in the log once it is back (a paused broker keeps its data: SIGSTOP, then SIGCONT)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from headwater import Project
from tests.conftest import SMALL_DEFINITIONS, write_project
from tests.kafka_broker import TansuBroker

LOCAL = "http://localhost"  # the server answers loopback Host names only

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def broker() -> Iterator[TansuBroker]:
    own = TansuBroker().start()
    yield own
    own.resume()  # a paused broker would not die on SIGKILL's wait otherwise
    own.stop()


def _project(tmp_path, broker: TansuBroker) -> Project:
    folder = write_project(tmp_path / "p", SMALL_DEFINITIONS)
    toml = folder / "headwater.toml"
    toml.write_text(
        toml.read_text()
        + f'[stores]\nlog = "{broker.url(partitions=3, delivery_timeout_ms=1500)}"\n'
    )
    return Project(folder, clock=lambda: NOW)


def _order(i: int) -> dict:
    ts = (NOW - timedelta(minutes=i)).isoformat()
    return {"event_id": f"o{i}", "user_id": f"u{i % 7}", "amount": float(i), "ts": ts}


def test_ingest_answers_503_while_the_broker_is_away_and_loses_nothing(tmp_path, broker):
    with _project(tmp_path, broker) as p, TestClient(p.app(), base_url=LOCAL) as client:
        acked: list[str] = []
        first = [_order(i) for i in range(20)]
        r = client.post("/v1/events/orders", json=first)
        assert r.status_code == 200, r.text
        acked += [e["event_id"] for e in first]

        broker.pause()
        try:
            began = time.monotonic()
            r = client.post("/v1/events/orders", json=[_order(i) for i in range(20, 30)])
            assert r.status_code == 503, r.text
            assert "Kafka" in r.json()["detail"]
            assert time.monotonic() - began < 15  # bounded by the delivery timeout
        finally:
            broker.resume()

        # the client retries what was not acknowledged; the log takes it now
        retry = [_order(i) for i in range(20, 30)]
        deadline = time.monotonic() + 30
        while True:
            r = client.post("/v1/events/orders", json=retry)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert r.status_code == 200, r.text
        acked += [e["event_id"] for e in retry]

        seen: list[str] = []
        for partition in range(p.log.partitions("orders")):
            seen += [rec.event_id for rec in p.log.read("orders", 0, 1000, partition)]
        # every acknowledged event once, and nothing else: the batch that got the 503 reached
        # the broker when it ran again, and its retry was answered as duplicates of it
        assert sorted(acked) == sorted(seen)
        assert r.json()["accepted"] + r.json()["duplicates"] == len(retry)


def test_concurrent_ingest_during_an_outage_never_acknowledges_a_lost_event(tmp_path, broker):
    """Senders keep sending through a pause; whatever got 200 must be in the log after."""
    with _project(tmp_path, broker) as p, TestClient(p.app(), base_url=LOCAL) as client:
        acked: list[str] = []
        statuses: list[int] = []
        stop = threading.Event()
        counter = iter(range(10**6))
        lock = threading.Lock()

        def send() -> None:
            while not stop.is_set():
                with lock:
                    batch = [_order(next(counter)) for _ in range(5)]
                r = client.post("/v1/events/orders", json=batch)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    acked.extend(e["event_id"] for e in batch)

        threads = [threading.Thread(target=send) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        broker.pause()
        time.sleep(3.0)
        broker.resume()
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert 503 in statuses and statuses.count(200) > 3
        assert set(statuses) <= {200, 503}
        seen = {
            rec.event_id
            for part in range(p.log.partitions("orders"))
            for rec in p.log.read("orders", 0, 100_000, part)
        }
        missing = set(acked) - seen
        assert not missing, f"{len(missing)} acknowledged events are not in the log"
