"""A ranking service that explores its first place logs each candidate's probability of being
placed first, and other first-place policies are evaluated off-policy on that traffic."""

from __future__ import annotations

import random

import orjson
import pytest

from headwater import Project
from headwater.definitions import DefinitionError
from headwater.monitoring.offpolicy import OffPolicyError
from tests.conftest import tiny_model, write_project
from tests.unit.serving.test_ranking import DEFINITIONS, ITEMS, NOW, clicks

EXPLORING = (
    DEFINITIONS
    + """
from headwater import Feedback
outcomes = Stream("first_place", fields={"prediction_id": "string", "bought": "int",
                                         "ts": "timestamp"},
                  key="prediction_id", time="ts", owner="web",
                  description="Whether the first product shown was bought")
services.append(
    Service("explore_recommend", model=models[0], candidates=item, k=3, explore=0.3,
            feedback=Feedback(outcomes, field="bought"), owner="web",
            description="Products, the first place sometimes explored")
)
"""
)
RATE = {item: 0.05 + 0.07 * n for n, item in enumerate(ITEMS)}  # true purchase rates


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    folder = write_project(tmp_path_factory.mktemp("exploring") / "p", EXPLORING)
    with Project(folder, clock=lambda: NOW) as p:
        p.ingest("clicks", clicks())
        p.process()
        p.promote("affinity", p.train("affinity").version)
        rnd = random.Random(8)
        # the exploring draws seeded too: a confidence interval misses the truth 5% of the
        # time, so with fresh draws each run the coverage check below would fail that often
        p.serving.predictor("explore_recommend").router._rng.seed(8)
        truth = {"greedy": [], "uniform": []}
        feedback = []
        for r in range(600):
            ranking = p.serving.rank("explore_recommend", {"user_id": f"u{r % 40}"}, ITEMS, k=3)
            first = ranking.top[0]
            bought = int(rnd.random() < RATE[first.entity["item_id"]])
            feedback.append({"prediction_id": first.prediction_id, "ts": NOW, "bought": bought})
            truth["uniform"].append(sum(RATE.values()) / len(ITEMS))
        p.serving.logger.flush()
        records = [orjson.loads(x.payload) for x in p.log.read("predictions", 0, 10**7)]
        records = [d for d in records if d["service"] == "explore_recommend"]
        for d in records:
            if d["score_rank"] == 1:
                truth["greedy"].append(RATE[d["item_id"]])
        assert p.ingest("first_place", feedback).accepted == len(feedback)
        yield p, records, {k: sum(v) / len(v) for k, v in truth.items()}


def test_each_candidate_logs_its_probability_of_the_first_place(explored):
    _, records, _ = explored
    by_request: dict[str, list[dict]] = {}
    for d in records:
        by_request.setdefault(d["ranking_id"], []).append(d)
    assert len(by_request) == 600
    explored_first = 0
    for group in by_request.values():
        n = len(group)
        assert sum(d["action_propensity"] for d in group) == pytest.approx(1.0)
        (best,) = [d for d in group if d["score_rank"] == 1]
        assert best["action_propensity"] == pytest.approx(0.7 + 0.3 / n)
        (first,) = [d for d in group if d["rank"] == 1]
        explored_first += first["score_rank"] != 1
        ranks = sorted(group, key=lambda d: d["rank"])
        assert [d["returned"] for d in ranks] == [True] * 3 + [False] * (n - 3)
    # the first place explored about 0.3 * 11/12 of the time
    assert abs(explored_first / 600 - 0.3 * 11 / 12) < 0.06


@pytest.mark.parametrize("policy", ["greedy", "uniform"])
def test_a_first_place_policy_is_evaluated_on_the_explored_traffic(explored, policy):
    p, _, truth = explored
    estimates, summary = p.evaluate_policy("explore_recommend", policy, days=1)
    assert 0.2 < summary["logged_share"]["explored"] < 0.35
    for e in estimates:
        assert e.n == 600 and e.clusters == 40
        assert e.ci_low <= truth[policy] <= e.ci_high, (e, truth[policy])


def test_exploration_is_for_rankings_and_needed_for_other_policies(explored, tmp_path):
    from headwater import Service

    p, _, _ = explored
    with pytest.raises(OffPolicyError, match="logged no ranking with exploration"):
        p.evaluate_policy("recommend", "uniform", days=1)
    with pytest.raises(OffPolicyError, match="greedy, uniform or explore=RATE"):
        p.evaluate_policy("explore_recommend", "explore=2", days=1)
    m = tiny_model()
    with pytest.raises(DefinitionError, match="only a ranking service"):
        Service("x", model=m, explore=0.1, owner="g", description="x")
