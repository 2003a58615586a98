"""A churn project with a PII stream and a service, declared in several environments, and
what "production-quality results" compares between two of them."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from headwater import Project
from headwater.definitions.types import to_micros
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

SOURCE = (
    DEFINITIONS
    + """
from headwater import Service

signups = Stream("signups", fields={"user_id": "string", "email": "string", "ts": "timestamp"},
                 key="user_id", time="ts", pii={"email": "pseudonymize"}, owner="growth",
                 description="Sign-ups")
services = [Service("risk", model=models[0], owner="growth", description="Churn risk")]

purchases = Stream("purchases", fields={"user_id": "string", "amount": "float", "ts": "timestamp"},
                   key="user_id", time="ts", owner="shop", description="Purchases")
features += [
    Feature(name, entity=user, stream=purchases, aggregation=aggregation, windows=["7d", "30d"],
            owner="growth", description=name)
    for name, aggregation in [("spend", agg.sum("amount")), ("basket", agg.mean("amount")),
                              ("spread", agg.stddev("amount"))]
]
models.append(Model("spender", label=churned, lookback="14d", estimator=lightgbm,
                    features=NUMERIC + ["spend_7d", "spend_30d", "basket_30d", "spread_30d"],
                    min_rows=50, owner="growth",
                    description="Churn from visits and spending (float sums)"))
"""
)
FEATURES = ["visits_1d", "visits_7d", "visits_30d", "device_lifetime"]
# floats whose sums depend on the order they add up in: spent in cents and in 1e6-scale bulk
FLOATS = ["spend_7d", "spend_30d", "basket_30d", "spread_30d"]
REDIS = "redis://127.0.0.1:6379/12"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def write(folder: Path, stores: str, environments: Sequence[str], name: str = "shop") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    declared = "".join(f"[environments.{e}]\n" for e in environments)
    (folder / "headwater.toml").write_text(
        f'[project]\nname = "{name}"\ndefinitions = ["definitions.py"]\n{stores}\n{declared}'
    )
    (folder / "definitions.py").write_text(textwrap.dedent(SOURCE))
    return folder


def fill(p: Project, users: int = 80, seed: int = 3) -> list[dict]:
    """Production's history: visits, a sign-up with an email per tenth user; processed, the
    churn model trained and promoted."""
    events = visits(users=users, seed=seed)
    assert not p.ingest("visits", events).rejected
    signups = [
        {"user_id": f"u{u}", "email": f"user{u}@mail.example", "ts": NOW}
        for u in range(0, users, 10)
    ]
    assert not p.ingest("signups", signups).rejected
    assert not p.ingest("purchases", purchases(events, seed)).rejected
    p.process()
    p.promote("churn", p.train("churn").version)
    p.train("spender")
    return events


def purchases(visits: list[dict], seed: int) -> list[dict]:
    """A purchase on one visit in three: amounts in cents, and now and then a bulk order of
    millions, so that float sums change with the order they are added in."""
    import random

    rnd = random.Random(seed)
    out = []
    for visit in visits[::3]:
        bulk = rnd.random() < 0.1
        amount = rnd.randrange(1, 10**8) / 100 if bulk else rnd.randrange(1, 20000) / 100
        out.append({"user_id": visit["user_id"], "amount": amount, "ts": visit["ts"]})
    return out


def users(p: Project) -> list[str]:
    return sorted({r["user_id"] for r in payloads(p, "visits")})


def payloads(p: Project, stream: str) -> list[dict]:
    import orjson

    out = []
    for partition in range(p.log.partitions(stream)):
        out += [orjson.loads(r.payload) for r in p.log.read(stream, 0, 10**7, partition)]
    return out


def records(p: Project, stream: str) -> dict[str, tuple[int, bytes]]:
    """Each record of a stream by id: event time and payload."""
    out = {}
    for partition in range(p.log.partitions(stream)):
        for r in p.log.read(stream, 0, 10**7, partition):
            assert r.event_id not in out, f"{r.event_id} twice in {stream}"
            out[r.event_id] = (r.event_time, r.payload)
    return out


def spine(ids: Sequence[str], at: datetime = NOW) -> pd.DataFrame:
    times = [at - pd.Timedelta(days=d) for d in (0, 3, 9)]
    return pd.DataFrame([{"user_id": u, "ts": t} for u in ids for t in times])


def same_frame(a: pd.DataFrame, b: pd.DataFrame, keys: Sequence[str]) -> None:
    """The same rows and values, rows compared in key and time order. Floats agree to 12
    digits: the offline engine sums them in the order it reads the history's files and its
    threads (the same history archived in other files can differ in the last bit)."""
    order = [*keys, *(c for c in ("ts", "timestamp") if c in a.columns)]
    a = a.sort_values(order).reset_index(drop=True)
    b = b.sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)


def same_metrics(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == pytest.approx(b[name], rel=1e-9, abs=1e-12), name


def same_results(production: Project, staging: Project, ids: Sequence[str]) -> None:
    """Production-quality results: the same online features, training sets, model metrics
    (a deterministic fit) and predictions of the version trained."""
    a = production.online_features([{"user_id": u} for u in ids], FEATURES)
    b = staging.online_features([{"user_id": u} for u in ids], FEATURES)
    assert a == b  # the processor reads each key's events in the same order: exact
    rows = spine(ids)
    same_frame(
        production.training_set(rows, FEATURES + FLOATS, time_column="ts"),
        staging.training_set(rows, FEATURES + FLOATS, time_column="ts"),
        ["user_id"],
    )
    # pinned to each log's end, the same events give the same bits (the join adds floats in
    # ascending order, whatever the files and threads they come from)
    pinned = [
        p.training.build(rows, FEATURES + FLOATS, time_column="ts", snapshot=log_ends(p))
        for p in (production, staging)
    ]
    assert pinned[0].equals(pinned[1])
    for model in ("churn", "spender"):
        trained = staging.train(model)
        first = production.registry.versions(model)[0]
        mine = staging.registry.version(model, trained.version)
        # the training sets hash the same: every row, every value, to the bit
        assert mine["lineage"]["snapshot"]["data_hash"] == first["lineage"]["snapshot"]["data_hash"]
        assert mine["lineage"]["snapshot"]["rows"] == first["lineage"]["snapshot"]["rows"]
        assert mine["metrics"] == first["metrics"]  # a deterministic fit on the same bits
    staging.promote("churn", staging.registry.versions("churn")[-1]["version"])
    keys = [{"user_id": u} for u in ids]
    scores_a = [x.score for x in production.serving.predict("risk", keys, "test")]
    scores_b = [x.score for x in staging.serving.predict("risk", keys, "test")]
    assert scores_a == scores_b


def log_ends(p: Project) -> dict[str, int]:
    """Every stream's end offsets now, as a training run pins them."""
    from headwater.log.base import partition_name

    return {
        partition_name(s, part): p.log.end_offset(s, part)
        for s in p.log.streams()
        for part in range(p.log.partitions(s))
    }


def drop_namespaces(part: str) -> None:
    """Delete what namespaces containing ``part`` left in the shared Redis and PostgreSQL."""
    import psycopg
    import redis

    client = redis.Redis.from_url(REDIS)
    for key in client.scan_iter(match=f"hw:*{part}*"):
        client.delete(key)
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        for (schema,) in conn.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s",
            (f"%{part}%",),
        ).fetchall():
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def micros(at: datetime) -> int:
    return to_micros(at)
