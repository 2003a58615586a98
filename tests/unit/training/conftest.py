"""A small churn project with deterministic, learnable behaviour and a fixed clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from headwater import Project
from tests.conftest import write_project

NOW = datetime(2026, 3, 1, tzinfo=UTC)

DEFINITIONS = """
from headwater import Entity, Expectation, Feature, Label, Model, PromotionPolicy, Stream, agg

user = Entity("user", keys="user_id", owner="growth", description="A user")
visits = Stream("visits", fields={"user_id": "string", "device": "string", "ts": "timestamp"},
                key="user_id", time="ts", owner="web", description="Visits")
features = [
    Feature("visits", entity=user, stream=visits, aggregation=agg.count(),
            windows=["1d", "7d", "30d"], owner="growth", description="Visits"),
    Feature("device", entity=user, stream=visits, aggregation=agg.last("device"),
            windows=["lifetime"], owner="growth", description="Latest device"),
]
churned = Label("churned_7d", entity=user, stream=visits, aggregation=agg.count(),
                horizon="7d", transform=lambda n: n == 0, owner="growth",
                description="No visit in the next 7 days")


def logistic():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))


def lightgbm():
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_estimators=30, random_state=1, deterministic=True, n_jobs=1,
                          verbose=-1)


FAIL_FIT = {"times": 0}


def flaky():
    FAIL_FIT["times"] -= 1
    if FAIL_FIT["times"] >= 0:
        raise RuntimeError("the fit blew up on purpose")
    return logistic()


NUMERIC = ["visits_1d", "visits_7d", "visits_30d"]
models = [
    Model("churn", label=churned, features=NUMERIC, estimator=logistic, lookback="14d",
          baseline=lambda df: -df["visits_7d"], min_rows=50,
          expectations=[Expectation("visits_7d", min_value=0)],
          owner="growth", description="Churn"),
    Model("churn_flaky", label=churned, features=NUMERIC, estimator=flaky, lookback="14d",
          retries=1, min_rows=50, owner="growth", description="Fails on purpose"),
    Model("churn_strict", label=churned, features=NUMERIC, estimator=logistic, lookback="14d",
          promotion=PromotionPolicy(metric="auc", max_regression=0.0, minimum=0.99),
          owner="growth", description="An unreachable bar"),
    Model("churn_device", label=churned, features=NUMERIC + ["device_lifetime"],
          estimator=lightgbm, lookback="14d", owner="growth", description="Strings too"),
]
"""


def visits(users: int = 150, days: int = 40, seed: int = 3, end: datetime = NOW) -> list[dict]:
    """Users visit at their own rate; some fade out, then churn (stop visiting)."""
    rnd = random.Random(seed)
    start = end - timedelta(days=days)
    events = []
    for u in range(users):
        rate = rnd.uniform(0.3, 3.0)
        churn_day = rnd.uniform(5, days * 1.5)
        day = 0.0
        while day < min(days, churn_day):
            fade = 0.25 if churn_day - day < 7 else 1.0  # visits thin out before churning
            day += rnd.expovariate(rate * fade)
            if day < min(days, churn_day):
                events.append(
                    {
                        "user_id": f"u{u}",
                        "device": rnd.choice(["ios", "web"]),
                        "ts": start + timedelta(days=day),
                    }
                )
    return events


@pytest.fixture
def churn_project(tmp_path):
    folder = write_project(tmp_path / "churn", DEFINITIONS)
    with Project(folder, clock=lambda: NOW) as p:
        assert not p.ingest("visits", visits()).rejected
        yield p
