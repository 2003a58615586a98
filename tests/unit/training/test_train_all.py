"""Training many models: one snapshot, one training-set build per group of models that learn
from the same examples (each model's share equal to its own build), parallel processes, and
one model's failure its own."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from headwater import Project
from headwater.cli import app
from headwater.training.sets import TrainingSets
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

MANY = (
    DEFINITIONS
    + """
orders = Stream("orders", fields={"user_id": "string", "amount": "float", "ts": "timestamp"},
                key="user_id", time="ts", owner="shop", description="Orders")
features.append(Feature("spend", entity=user, stream=orders, aggregation=agg.sum("amount"),
                        windows=["7d"], owner="shop", description="Spend"))
models += [
    Model("spend_churn", label=churned, features=["visits_7d", "spend_7d"], estimator=logistic,
          lookback="14d", owner="shop", description="Other streams: another spine"),
    Model("spend_only", label=churned, features=["spend_7d"], estimator=logistic,
          lookback="14d", owner="shop", description="The same spine as spend_churn"),
    Model("too_small", label=churned, features=NUMERIC, estimator=logistic, lookback="14d",
          min_rows=10**6, owner="growth", description="Fails validation on purpose"),
    Model("weekly", label=churned, features=["visits_7d"], estimator=logistic, lookback="21d",
          owner="web", description="Other sample times: a group of its own"),
]
"""
)
GROUP = ["churn", "churn_strict", "churn_device", "too_small"]  # one spine: visits
SPEND = ["spend_churn", "spend_only"]  # another: the users of visits and orders


@pytest.fixture
def project(project_factory):
    with Project(project_factory(MANY), clock=lambda: NOW) as p:
        p.ingest("visits", visits(users=80, days=30))
        p.ingest("orders", _orders(NOW))
        yield p


def _orders(end: datetime) -> list[dict]:
    """Orders of a third of the users (and of some who never visit): the spine of the models
    reading orders (users seen in visits or orders) differs from the visits-only models'."""
    return [
        {"user_id": f"u{u}", "amount": float(u % 7 + day), "ts": end - timedelta(days=day, hours=u)}
        for u in range(0, 120, 3)
        for day in range(1, 25, 4)
    ]


def test_a_shared_training_set_is_what_each_models_own_build_gives(project, monkeypatch):
    p = project
    alone = {
        m: p.train(m).run["data_hash"]
        for m in ("churn", "churn_strict", "churn_device", "spend_churn", "spend_only")
    }
    shutil.rmtree(p.root / ".headwater" / "cache")  # nothing reused from those runs
    builds: list[list[str]] = []
    real = TrainingSets.build

    def counted(self, spine, features, *args, **kwargs):  # type: ignore[no-untyped-def]
        builds.append(list(features))
        return real(self, spine, features, *args, **kwargs)

    monkeypatch.setattr(TrainingSets, "build", counted)
    lines: list[str] = []
    results = p.train_all([*GROUP, *SPEND, "weekly"], log=lines.append)
    assert list(results) == [*GROUP, *SPEND, "weekly"]
    for name, data_hash in alone.items():
        run = results[name].run  # type: ignore[union-attr]
        assert run["data_hash"] == data_hash  # the very rows and values of its own build
        group = GROUP if name in GROUP else SPEND
        assert run["training_set_shared_with"] == [m for m in group if m != name]
        assert run["steps"][0]["name"] == "training_set"
        assert run["steps"][0]["status"] == "cached"  # built once for the group
    union = ["visits_1d", "visits_7d", "visits_30d", "device_lifetime"]
    assert builds.count(union) == 1  # one build for the four models' training sets
    assert builds.count(["visits_7d", "spend_7d"]) == 1  # and one for the other spine's
    assert ["visits_7d"] in builds  # weekly samples other times: its own build
    assert "training_set_shared_with" not in results["weekly"].run  # type: ignore[union-attr]
    shared = "shared training set of churn, churn_strict, churn_device, too_small"
    assert shared in "\n".join(lines)
    # one model's failure is its own
    failed = results["too_small"]
    assert isinstance(failed, Exception) and "needs at least 1000000" in str(failed)
    assert results["weekly"].version == 1  # type: ignore[union-attr]


def test_train_all_of_a_team_in_two_processes(project_factory):
    folder = project_factory(MANY)  # the CLI trains as of now: events up to now
    with Project(folder) as p:
        p.ingest("visits", visits(users=80, days=30, end=datetime.now(UTC)))
        p.ingest("orders", _orders(datetime.now(UTC)))
    result = CliRunner().invoke(
        app, ["train", "--all", "--team", "web", "--jobs", "2", "-p", str(folder)]
    )
    assert result.exit_code == 0, result.output
    assert "trained 1 of 1 models" in result.output and "weekly" in result.output
    result = CliRunner().invoke(
        app, ["train", "--all", "--team", "growth", "--jobs", "2", "-p", str(folder)]
    )
    assert result.exit_code == 1  # too_small fails; the others are registered
    assert "trained 4 of 5 models" in result.output
    assert "needs at least" in result.output
    with Project(folder) as p:
        runs = p.registry.runs()
        versions = {m: [d["version"] for d in p.registry.versions(m)] for m in GROUP}
    assert versions == {"churn": [1], "churn_strict": [1], "churn_device": [1],
                        "too_small": []}  # fmt: skip
    shared = {r["model"]: r.get("training_set_shared_with") for r in runs}
    assert shared["churn"] == ["churn_device", "churn_flaky", "churn_strict", "too_small"]
    assert len({r["id"] for r in runs}) == len(runs)


def test_train_all_needs_a_model_or_all(project):
    folder = str(project.root)
    result = CliRunner().invoke(app, ["train", "-p", folder])
    assert result.exit_code != 0 and "give a model name, or --all" in result.output
    result = CliRunner().invoke(app, ["train", "churn", "--all", "-p", folder])
    assert result.exit_code != 0 and "not both" in result.output
