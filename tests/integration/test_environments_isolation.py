"""Two projects, each with a production and a staging environment, on one Kafka broker, one
Redis, one PostgreSQL and one shared folder of history and model files: every environment
sees its own events, online states, models, predictions, monitor state and alerts, and
nothing of the three others'; each pseudonymizes PII with its own secret."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pandas as pd
import psycopg
import pytest
import redis

from headwater import Project
from headwater.log.base import NewRecord
from tests.conftest import write_project
from tests.environments_shop import POSTGRES, REDIS, SOURCE, drop_namespaces, payloads
from tests.unit.training.conftest import NOW, visits

ENVIRONMENTS = ("production", "staging")


def _config(name: str, kafka: str, shared: Path) -> str:
    return f"""
[project]
name = "{name}"
definitions = ["definitions.py"]

[stores]
log = "{kafka}"
online = "{REDIS}"
offline = "file://{shared}/offline"
metadata = "{POSTGRES}"
artifacts = "file://{shared}/artifacts"
monitor = "{POSTGRES}"

[environments.production]
[environments.staging]
"""


@pytest.fixture(scope="module")
def environments(tmp_path_factory, kafka_broker):
    """Per (project, environment): what it ingested, predicted and raised, after doing all of
    it in each of the four in turn."""
    tag = uuid.uuid4().hex[:8]
    shared = tmp_path_factory.mktemp("shared")
    kafka = kafka_broker.url(partitions=2, idle_ms=50)
    mp = pytest.MonkeyPatch()
    # a secret per environment (the suite's common one stands behind them)
    mp.setenv("HEADWATER_PII_SECRET_PRODUCTION", "production-secret-" + "p" * 32)
    mp.setenv("HEADWATER_PII_SECRET_STAGING", "staging-secret-" + "s" * 32)
    done = {}
    folders = {}
    for index, letter in enumerate("ab"):
        name = f"iso{tag}{letter}"
        folder = write_project(tmp_path_factory.mktemp(name) / name, SOURCE)
        (folder / "headwater.toml").write_text(_config(name, kafka, shared))
        folders[letter] = folder
        for e, env in enumerate(ENVIRONMENTS):
            who = f"{letter}{env[0]}"  # e.g. "as": project a, staging
            with Project(folder, env=env, clock=lambda: NOW) as p:
                p.apply()
                events = [
                    {**v, "user_id": f"{who}-{v['user_id']}"}
                    for v in visits(users=80, seed=10 * index + e)
                ]
                p.ingest("visits", events)
                p.ingest(
                    "signups",
                    [{"user_id": f"{who}-u1", "email": f"{who}@mail.example", "ts": NOW}],
                )
                p.process()
                version = p.train("churn").version
                p.promote("churn", version)
                users = [{"user_id": f"{who}-u{i}"} for i in range(2 + 2 * (2 * index + e))]
                predictions = p.serving.predict("risk", users, "test")
                p.serving.logger.flush()
                alert = NewRecord(f"alert-{who}", p.now(), orjson.dumps({"who": who}))
                p.log.append("alerts", [alert], p.now())
                run = p.monitor("risk")
                done[letter, env] = {
                    "who": who,
                    "events": len(events),
                    "probe": max(events, key=lambda v: v["ts"])["user_id"],  # active lately
                    "version": version,
                    "predictions": [x.prediction_id for x in predictions],
                    "monitored": sum(r.predictions for r in run.reports),
                }
    yield folders, done, shared
    mp.undo()
    drop_namespaces(f"iso{tag}")


@pytest.mark.parametrize("letter", "ab")
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_environment_sees_only_its_own_data(environments, letter, env):
    folders, done, _ = environments
    mine = done[letter, env]
    who = mine["who"]
    others = [d["probe"] for key, d in done.items() if key != (letter, env)]
    probes = [mine["probe"], *others]
    with Project(folders[letter], env=env, clock=lambda: NOW) as p:
        assert p.environment.name == env
        assert p.environment.namespace == f"{folders[letter].name}_{env}"
        # events: exactly its own, in the log and in the history
        visits_seen = payloads(p, "visits")
        assert len(visits_seen) == mine["events"]
        assert {v["user_id"].split("-")[0] for v in visits_seen} == {who}
        spine = pd.DataFrame({"user_id": probes, "ts": NOW})
        history = p.training_set(spine, ["visits_30d"], time_column="ts")
        assert history["visits_30d"].fillna(0).tolist()[1:] == [0, 0, 0]
        assert history["visits_30d"].tolist()[0] > 0
        # online state: its own users have features, the others' none
        online = p.online_features([{"user_id": probe} for probe in probes], ["visits_30d"])
        values = [row["visits_30d"] or 0 for row in online]
        assert values[0] > 0 and values[1:] == [0, 0, 0]
        # models: one version, trained here
        versions = p.registry.versions("churn")
        assert [v["version"] for v in versions] == [mine["version"]] == [1]
        # predictions, the monitor's ledger, alerts: its own only
        logged = payloads(p, "predictions")
        assert sorted(r["prediction_id"] for r in logged) == sorted(mine["predictions"])
        assert mine["monitored"] == len(mine["predictions"])
        assert [a.body for a in p.alerts.list()] == [{"who": who}]
        # PII: pseudonymized with this environment's own secret
        (signup,) = payloads(p, "signups")
        assert signup["email"].startswith("pii_") and "@" not in signup["email"]
        secret = f"{env}-secret-".encode() + (b"p" if env == "production" else b"s") * 32
        from headwater.privacy.policies import PiiSecret

        assert signup["email"] == PiiSecret(secret).pseudonym(f"{who}@mail.example")


def test_the_shared_stores_hold_each_environment_apart(environments, kafka_broker):
    from confluent_kafka.admin import AdminClient

    folders, _, shared = environments
    spaces = [f"{f.name}_{env}" for f in folders.values() for env in ENVIRONMENTS]
    client = redis.Redis.from_url(REDIS)
    topics = AdminClient({"bootstrap.servers": kafka_broker.address})
    listed = topics.list_topics(timeout=10).topics
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        schemas = {
            s
            for (s,) in conn.execute(
                "SELECT schema_name FROM information_schema.schemata"
            ).fetchall()
        }
    for space in spaces:
        assert any(client.scan_iter(match=f"hw:{space}:s:*", count=1000))
        assert {f"{space}.visits", f"{space}.predictions", f"{space}.alerts"} <= set(listed)
        assert {f"headwater_{space}", f"headwater_monitor_{space}"} <= schemas
        assert any((shared / "offline" / space).rglob("*.parquet"))
        assert any((shared / "artifacts" / space).rglob("*"))
