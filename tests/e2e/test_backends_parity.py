"""The same project on Kafka + Redis + PostgreSQL and on the embedded stores: the same online
features, the same training set, the same model and the same predictions."""

from __future__ import annotations

import math
import random
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import redis

from headwater import Project
from headwater.examples.shop.definitions import BEHAVIOUR
from headwater.examples.shop.simulator import simulate
from tests.conftest import SHOP
from tests.kafka_broker import TansuBroker

END = datetime(2026, 3, 1, tzinfo=UTC)
REDIS_DB = 11  # this test's own database: flushed before it runs
PG = "postgresql://postgres@127.0.0.1:5432/test"
ITEM_FEATURES = ["item_views_1d", "item_views_7d", "item_cart_adds_7d"]


@pytest.fixture
def broker() -> Iterator[TansuBroker]:
    own = TansuBroker().start()
    yield own
    own.stop()


def _folder(root: Path, stores: str | None) -> Path:
    folder = root
    folder.mkdir()
    for name in ("headwater.toml", "definitions.py"):
        shutil.copy(SHOP / name, folder / name)
    if stores is not None:
        toml = folder / "headwater.toml"
        text = toml.read_text()
        start = text.index("[stores]")
        end = text.find("\n[", start + 1)
        tail = "" if end == -1 else text[end:]
        toml.write_text(text[:start] + stores + tail)
    return folder


def test_kafka_redis_postgres_give_the_embedded_results(tmp_path, broker):
    schema = f"parity_{uuid.uuid4().hex[:8]}"
    redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}").flushdb()
    scaled = _folder(
        tmp_path / "scaled",
        "[stores]\n"
        f'log = "{broker.url(partitions=2)}"\n'
        f'online = "redis://127.0.0.1:6379/{REDIS_DB}"\n'
        'offline = "file://.headwater/offline"\n'
        f'metadata = "{PG}?schema={schema}"\n',
    )
    embedded = _folder(tmp_path / "embedded", None)
    sim = simulate(users=250, days=30, end=END.timestamp(), seed=3)
    rng = random.Random(1)
    users = sorted(sim.users)
    spine = pd.DataFrame(
        {
            "user_id": [rng.choice(users) for _ in range(400)],
            "timestamp": pd.to_datetime(
                [END.timestamp() - rng.random() * 20 * 86400 for _ in range(400)],
                unit="s",
                utc=True,
            ),
        }
    )
    results = {}
    for name, folder in (("embedded", embedded), ("scaled", scaled)):
        with Project(folder, clock=lambda: END) as p:
            p.apply()
            for stream, events in sim.events.items():
                assert not p.ingest(stream, events).rejected
            p.process()
            online = p.online_features([{"user_id": u} for u in users], BEHAVIOUR)
            items = sorted({e["item_id"] for e in sim.events["page_views"] if e.get("item_id")})
            item_rows = p.online_features([{"item_id": i} for i in items], ITEM_FEATURES)
            training = p.training_set(spine, BEHAVIOUR).sort_values(["user_id", "timestamp"])
            version = p.train("churn").version
            p.promote("churn", version)
            doc = p.registry.version("churn", version)
            scores = [p.predict("retention", user_id=u)["score"] for u in users[:50]]
            results[name] = (online, item_rows, training.reset_index(drop=True), doc, scores)
        if name == "scaled":
            p.close()

    (online_a, items_a, train_a, doc_a, scores_a) = results["embedded"]
    (online_b, items_b, train_b, doc_b, scores_b) = results["scaled"]
    assert len(online_a) == len(users) and any(r["sessions_30d"] for r in online_a)
    for a, b in zip(online_a, online_b, strict=True):
        assert a.keys() == b.keys()
        assert all(_same(a[k], b[k]) for k in a), (a, b)
    assert items_a == items_b  # counts: exact, whatever the partitions' interleaving
    pd.testing.assert_frame_equal(train_a, train_b, check_exact=False, rtol=1e-9)
    assert doc_b["lineage"]["snapshot"]["rows"] == doc_a["lineage"]["snapshot"]["rows"]
    assert doc_b["metrics"]["auc"] == pytest.approx(doc_a["metrics"]["auc"], abs=1e-9)
    assert scores_b == pytest.approx(scores_a, rel=1e-9)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    return a == b
