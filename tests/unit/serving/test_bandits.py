"""Bandits learn per model version (a promotion starts from the prior, or a declared warm
start), from 0/1 or continuous rewards; invalid rewards are refused, not learned."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from headwater import Project
from tests.conftest import write_project
from tests.unit.serving.test_predict import SERVICES, champion_and_challenger
from tests.unit.serving.test_propensities import send_rewards
from tests.unit.training.conftest import NOW

BANDITS = (
    SERVICES
    + """
revenue = Stream("revenue", fields={"user_id": "string", "prediction_id": "string",
                                    "amount": "float", "ts": "timestamp"},
                 key="user_id", time="ts", owner="web", description="Order value per offer")
services += [
    Service("offer_value", variants=[Variant("a", churn_model),
                                     Variant("b", churn_model, alias="challenger")],
            routing="bandit", bandit=Bandit(revenue, reward_field="amount",
                                            reward="continuous", prior=(0.0, 1.0)),
            owner="growth", description="Learns which offer earns more"),
    Service("risk_warm", variants=[Variant("a", churn_model),
                                   Variant("b", churn_model, alias="challenger")],
            routing="bandit", bandit=Bandit(rewards, warm_start=0.5),
            owner="growth", description="Keeps half of what a version learned"),
]
"""
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with champion_and_challenger(write_project(tmp_path_factory.mktemp("bandits") / "p",
                                               BANDITS)) as p:  # fmt: skip
        yield p


def _play(p: Project, service: str, stream: str, field: str, reward, rounds: int, seed: int):
    predictor = p.serving.predictor(service)
    rnd = random.Random(seed)
    chosen = []
    for _ in range(rounds):
        preds = predictor.predict([{"user_id": f"u{rnd.randrange(150)}"} for _ in range(20)], "t")
        chosen += [x.variant for x in preds]
        send_rewards(p, preds, lambda variant: reward(variant, rnd), stream, field)
        predictor.router.learn()
    return predictor, chosen


def test_a_bandit_learns_from_continuous_rewards(served):
    means = {"a": 5.0, "b": 8.0}
    predictor, chosen = _play(
        served, "offer_value", "revenue", "amount",
        lambda v, rnd: rnd.gauss(means[v], 2.0), rounds=25, seed=3,
    )  # fmt: skip
    assert chosen[-200:].count("b") / 200 > 0.8
    arms = predictor.router.posteriors()
    assert arms["b"]["mean"] == pytest.approx(8.0, abs=0.6)
    assert arms["b"]["probability"] > 0.9 and arms["b"]["version"] == 2


def test_a_new_version_starts_from_the_prior_or_the_warm_start(served):
    p = served
    predictor, _ = _play(
        p, "risk_bandit", "rewards", "reward",
        lambda v, rnd: int(rnd.random() < {"a": 0.2, "b": 0.7}[v]), rounds=10, seed=4,
    )  # fmt: skip
    warm, _ = _play(
        p, "risk_warm", "rewards", "reward",
        lambda v, rnd: int(rnd.random() < {"a": 0.2, "b": 0.7}[v]), rounds=10, seed=4,
    )  # fmt: skip
    before = predictor.router.posteriors()["b"]
    warm_before = warm.router.posteriors()["b"]
    assert before["version"] == 2 and before["rewards"] > 20
    # a new version of the challenger: the variant "b" now serves version 3
    p.promote("churn", p.train("churn").version, alias="challenger", force=True)
    p.serving.scorers.refresh()
    after = predictor.router.posteriors()["b"]
    assert after["version"] == 3 and after["rewards"] == 0 and after["mean"] == 0.5
    warm_after = warm.router.posteriors()["b"]
    assert warm_after["rewards"] == pytest.approx(0.5 * warm_before["rewards"])
    # version 2's evidence is kept: a rollback finds it again
    p.rollback("churn", alias="challenger", reason="back")
    p.serving.scorers.refresh()
    assert predictor.router.posteriors()["b"]["rewards"] == before["rewards"]


def test_a_binary_bandit_refuses_a_reward_that_is_not_0_or_1(served):
    predictor = served.serving.predictor("risk_bandit")
    pred = predictor.predict([{"user_id": "u1"}], "t")[0]
    refused = predictor.router._bandit.refused
    served.ingest("rewards", [{"user_id": "u1", "prediction_id": pred.prediction_id,
                               "reward": 3, "ts": NOW - timedelta(seconds=1)}])  # fmt: skip
    served.serving.logger.flush()
    before = predictor.router.learn()
    assert predictor.router._bandit.refused == refused + 1
    assert predictor.router.learn() == before


def test_the_allocation_over_time_is_recorded_per_variant_and_version(served):
    from fastapi.testclient import TestClient

    _play(
        served, "risk_warm", "rewards", "reward",
        lambda v, rnd: int(rnd.random() < {"a": 0.1, "b": 0.9}[v]), rounds=5, seed=9,
    )  # fmt: skip
    table = served.allocation("risk_warm", days=3650)
    assert set(table["variant"]) == {"a", "b"}
    assert table.groupby("day")["share"].sum().round(9).eq(1.0).all()
    logged = [
        r for r in served.log.read("predictions", 0, 10**7)
        if b'"risk_warm"' in r.payload and b'"shadow":false' in r.payload
    ]  # fmt: skip
    assert table["decisions"].sum() == len(logged)
    assert table["mean_propensity"].between(0, 1).all()
    page = TestClient(served.app(), base_url="http://127.0.0.1").get("/ui/services/risk_warm")
    assert "Allocation: the share of risk_warm" in page.text
