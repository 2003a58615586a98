"""Serving replicas are stateless: two servers started from two folders with the same
``headwater.toml`` (Kafka, Redis, PostgreSQL for metadata and monitor state, one shared
location for history and model files) answer alike, follow a promotion made through either
within about a second, and ``headwater monitor`` from either folder sees both's predictions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from headwater import Project
from headwater.examples.shop.simulator import simulate
from tests.conftest import SHOP
from tests.e2e.servers import free_port, headwater, start_server
from tests.kafka_broker import TansuBroker

PG = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_DB = 12  # this module's own database: flushed before it runs
USERS = 120
AT = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())  # one instant for both servers


def _replica(folder: Path, stores: str) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(SHOP / "definitions.py", folder / "definitions.py")
    text = (SHOP / "headwater.toml").read_text()
    start = text.index("[stores]")
    end = text.find("\n[", start + 1)
    (folder / "headwater.toml").write_text(text[:start] + stores + text[end:])
    return folder


SERVED: list[int] = []  # the predictions each request of this module got, on either server
ACTIVE: list[str] = []  # users with sessions in the simulation (known to every feature set)


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    own = TansuBroker().start()  # the shop's stream names: a broker of this module's own
    yield own
    own.stop()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, broker: TansuBroker) -> Iterator[tuple[Path, Path, list]]:
    root = tmp_path_factory.mktemp("replicas")
    shared = root / "shared"  # a volume both hosts mount: history and model files
    schema = f"replicas_{uuid.uuid4().hex[:8]}"
    redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}").flushdb()
    stores = (
        "[stores]\n"
        f'log = "{broker.url(partitions=2)}"\n'
        f'online = "redis://127.0.0.1:6379/{REDIS_DB}"\n'
        f'offline = "file://{shared}/offline"\n'
        f'artifacts = "file://{shared}/artifacts"\n'
        f'metadata = "{PG}?schema={schema}"\n'
        f'monitor = "{PG}?schema={schema}_monitor"\n'
    )
    a, b = _replica(root / "a", stores), _replica(root / "b", stores)
    assert (a / "headwater.toml").read_text() == (b / "headwater.toml").read_text()
    sim = simulate(users=USERS, days=30, end=time.time() - 60, seed=5)
    # which users have events depends on the wall clock the simulation ends at
    ACTIVE[:] = sorted({e["user_id"] for e in sim.events["sessions"]})
    with Project(a) as p:
        p.apply()
        for stream, events in sim.events.items():
            assert not p.ingest(stream, events).rejected
        p.process()
        first = p.train("churn").version
        p.promote("churn", first)
    with Project(b) as p:  # the other folder trains the next version, promoted later
        second = p.train("churn").version
    assert (first, second) == (1, 2)
    servers = []
    try:
        for folder in (a, b):
            port = free_port()
            servers.append((start_server(folder, port), f"http://127.0.0.1:{port}"))
        yield a, b, servers
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(30)
        with psycopg.connect(PG, autocommit=True) as conn:
            for name in (schema, f"{schema}_monitor"):
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _user(i: int) -> str:
    return f"u-{i:06d}"  # the simulator's ids


def _predict(url: str, users: list[str]) -> list[dict]:
    response = httpx.post(
        f"{url}/v1/predict/retention",
        json={"entities": [{"user_id": u} for u in users]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    SERVED.append(len(response.json()["predictions"]))
    return response.json()["predictions"]


def _features(url: str, users: list[str]) -> list[dict]:
    response = httpx.post(
        f"{url}/v1/features",
        json={
            "entities": [{"user_id": u} for u in users],
            "features": ["sessions_30d", "orders_lifetime"],
            "at": AT,
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_both_replicas_answer_alike_and_follow_a_promotion_within_a_second(replicas):
    a, b, servers = replicas
    users = ACTIVE[:40]
    assert len(users) == 40
    (_, url_a), (_, url_b) = servers
    got_a, got_b = _predict(url_a, users), _predict(url_b, users)
    assert [(p["score"], p["model_version"]) for p in got_a] == [
        (p["score"], p["model_version"]) for p in got_b
    ]
    assert {p["model_version"] for p in got_a} == {1}
    assert not any(p["unknown_entity"] for p in got_a), [
        p["entity"] for p in got_a if p["unknown_entity"]
    ]
    features = _features(url_a, users)
    assert features == _features(url_b, users)
    assert sum(1 for row in features if row["sessions_30d"]) > 30

    promoted = headwater(
        "models", "promote", "churn", "2", "--force", "--reason", "replicas test",
        "--project", str(b), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = promoted.communicate(timeout=60)
    assert promoted.returncode == 0, out
    began, seen = time.monotonic(), {}
    while len(seen) < 2 and time.monotonic() - began < 10:
        for name, url in (("a", url_a), ("b", url_b)):
            if name not in seen and _predict(url, users[:1])[0]["model_version"] == 2:
                seen[name] = time.monotonic() - began
        time.sleep(0.05)
    print(f"\nversion 2 served {seen} s after `headwater promote` returned")
    assert set(seen) == {"a", "b"} and max(seen.values()) <= 1.5
    after_a, after_b = _predict(url_a, users), _predict(url_b, users)
    assert [p["score"] for p in after_a] == [p["score"] for p in after_b]


def test_monitor_from_either_folder_sees_the_predictions_of_both(replicas):
    a, b, servers = replicas
    (_, url_a), (_, url_b) = servers
    _predict(url_a, [_user(i) for i in range(30)])
    _predict(url_b, [_user(i) for i in range(50, 75)] + ["nobody"])
    time.sleep(1.5)  # each server's prediction logger flushes within a second
    counts = []
    for folder in (a, b):
        run = headwater(
            "monitor", "retention", "--days", "1", "--project", str(folder),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        out, _ = run.communicate(timeout=300)
        assert run.returncode == 0, out
        found = re.findall(r"retention.* v\d+ .*?: ([\d,]+) predictions", out)
        counts.append(sum(int(n.replace(",", "")) for n in found))
    assert counts == [sum(SERVED), sum(SERVED)]  # every prediction of both servers
