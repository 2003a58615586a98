"""A churn project with a PII stream and a service, declared in several environments, and
what "production-quality results" compares between two of them."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd

from headwater import Project
from headwater.definitions.types import to_micros
from headwater.training.trainer import data_hash
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

SOURCE = (
    DEFINITIONS
    + """
from headwater import Service

signups = Stream("signups", fields={"user_id": "string", "email": "string", "ts": "timestamp"},
                 key="user_id", time="ts", pii={"email": "pseudonymize"}, owner="growth",
                 description="Sign-ups")
services = [Service("risk", model=models[0], owner="growth", description="Churn risk")]
"""
)
FEATURES = ["visits_1d", "visits_7d", "visits_30d", "device_lifetime"]


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
    p.process()
    p.promote("churn", p.train("churn").version)
    return events


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


def same_results(production: Project, staging: Project, ids: Sequence[str]) -> None:
    """Production-quality results: the same online features, training sets (their data
    hash), model metrics (a deterministic fit) and predictions of the version trained."""
    a = production.online_features([{"user_id": u} for u in ids], FEATURES)
    b = staging.online_features([{"user_id": u} for u in ids], FEATURES)
    assert a == b
    rows = spine(ids)
    set_a = production.training_set(rows, FEATURES, time_column="ts")
    set_b = staging.training_set(rows, FEATURES, time_column="ts")
    assert data_hash(set_a) == data_hash(set_b)
    trained = staging.train("churn")
    staging.promote("churn", trained.version)
    first = production.registry.versions("churn")[0]
    mine = staging.registry.versions("churn")[-1]
    assert mine["metrics"] == first["metrics"]
    assert mine["lineage"]["snapshot"]["data_hash"] == first["lineage"]["snapshot"]["data_hash"]
    keys = [{"user_id": u} for u in ids]
    scores_a = [x.score for x in production.serving.predict("risk", keys, "test")]
    scores_b = [x.score for x in staging.serving.predict("risk", keys, "test")]
    assert scores_a == scores_b


def micros(at: datetime) -> int:
    return to_micros(at)
