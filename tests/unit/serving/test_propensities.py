"""Every A/B and bandit decision is logged with the probability of its choice; shadows and
alternatives are logged as not chosen."""

from __future__ import annotations

import random
from datetime import timedelta

import orjson
import pytest
from scipy import integrate, stats

from headwater import Project
from headwater.serving.routing import THOMPSON_DRAWS
from tests.conftest import tiny_model, write_project
from tests.unit.serving.test_predict import SERVICES, champion_and_challenger
from tests.unit.training.conftest import NOW

PROPENSITIES = (
    SERVICES
    + """
services += [
    Service("risk_eps", variants=[Variant("a", churn_model), Variant("b", churn_model,
                                                                   alias="challenger")],
            routing="bandit", bandit=Bandit(rewards, policy="epsilon", epsilon=0.2),
            owner="growth", description="Epsilon-greedy"),
    Service("risk_alt", variants=[Variant("a", churn_model, weight=3),
                                  Variant("b", churn_model, alias="challenger", weight=1)],
            routing="ab", score_alternatives=True, owner="growth",
            description="A/B, every variant scored"),
]
"""
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with champion_and_challenger(write_project(tmp_path_factory.mktemp("propensities") / "p",
                                               PROPENSITIES)) as p:  # fmt: skip
        yield p


def _logged(p: Project, service: str) -> list[dict]:
    p.serving.logger.flush()
    return [
        doc
        for r in p.log.read("predictions", 0, 10**7)
        if (doc := orjson.loads(r.payload))["service"] == service
    ]


def test_ab_records_carry_their_weight_share_and_shadows_are_not_chosen(served):
    served.serving.predict("risk_ab", [{"user_id": f"u{i}"} for i in range(40)], "t")
    records = _logged(served, "risk_ab")
    assert {r["variant"]: r["propensity"] for r in records} == {"a": 0.75, "b": 0.25}
    assert all(r["chosen"] for r in records)
    served.serving.predict("risk_shadow", [{"user_id": "u1"}], "t")
    served.serving.predictor("risk_shadow").drain()
    shadow = _logged(served, "risk_shadow")
    assert [(r["shadow"], r["chosen"]) for r in shadow] == [(False, True), (True, False)]
    assert shadow[0]["propensity"] == 1.0 and shadow[1]["propensity"] is None
    pinned = served.serving.predictor("risk_ab").predict([{"user_id": "u1"}], "t", variant="b")
    assert pinned[0].propensity is None  # a pinned request was not randomized


def send_rewards(p: Project, preds, value, stream: str = "rewards", field: str = "reward"):
    """Each prediction's reward, ``value(variant)``, to the reward stream; the predictions
    flushed so that the bandit can join them."""
    events = [
        {"user_id": x.entity["user_id"], "prediction_id": x.prediction_id,
         field: value(x.variant), "ts": NOW - timedelta(seconds=1)}
        for x in preds
    ]  # fmt: skip
    assert p.ingest(stream, events).accepted == len(events)
    p.serving.logger.flush()


def _reward(p: Project, preds, rate: dict[str, float], rnd: random.Random) -> None:
    send_rewards(p, preds, lambda variant: int(rnd.random() < rate[variant]))


def test_thompson_propensities_match_the_exact_probability(served):
    predictor = served.serving.predictor("risk_bandit")
    rnd = random.Random(5)
    for _ in range(5):
        preds = predictor.predict([{"user_id": f"u{rnd.randrange(150)}"} for _ in range(20)], "t")
        _reward(served, preds, {"a": 0.3, "b": 0.6}, rnd)
        predictor.router.learn()
    posteriors = predictor.router.learn()
    (sa, fa), (sb, fb) = posteriors["a"], posteriors["b"]
    # P(draw of b > draw of a) for Beta(sb+1, fb+1) and Beta(sa+1, fa+1), by quadrature
    exact_b, _ = integrate.quad(
        lambda x: stats.beta.pdf(x, sb + 1, fb + 1) * stats.beta.cdf(x, sa + 1, fa + 1), 0, 1
    )
    last = predictor.predict([{"user_id": "u3"}], "t")[0]
    record = _logged(served, "risk_bandit")[-1]
    assert record["prediction_id"] == last.prediction_id
    assert record["propensity_draws"] == THOMPSON_DRAWS
    expected = exact_b if last.variant == "b" else 1 - exact_b
    # a Monte Carlo estimate: within 4 standard errors of the exact value
    assert (
        abs(record["propensity"] - expected) < 4 * (expected * (1 - expected) / 4000) ** 0.5 + 1e-3
    )


def test_epsilon_greedy_propensities(served):
    predictor = served.serving.predictor("risk_eps")
    rnd = random.Random(6)
    preds = predictor.predict([{"user_id": f"u{i}"} for i in range(60)], "t")
    _reward(served, preds, {"a": 0.1, "b": 0.9}, rnd)
    predictor.router.learn()
    preds = predictor.predict([{"user_id": f"u{i}"} for i in range(200)], "t")
    greedy = predictor.router.probabilities()
    best = max(greedy, key=lambda v: greedy[v])
    assert greedy[best] == pytest.approx(0.8 + 0.1) and sum(greedy.values()) == pytest.approx(1)
    chosen = {x.variant: x.propensity for x in preds}  # one propensity per variant
    assert chosen[best] == pytest.approx(0.9)
    assert all(p == pytest.approx(0.1) for v, p in chosen.items() if v != best)
    assert len({(x.variant, x.propensity) for x in preds}) == len(chosen)


def test_score_alternatives_logs_every_unchosen_variant_with_the_same_features(served):
    users = [{"user_id": f"u{i}"} for i in range(30)]
    answers = served.serving.predict("risk_alt", users, "t")
    served.serving.predictor("risk_alt").drain()
    records = _logged(served, "risk_alt")
    alternatives = {r["alternative_to"]: r for r in records if not r["chosen"]}
    assert set(alternatives) == {a.prediction_id for a in answers}
    for answer, user in zip(answers, users, strict=True):
        alt = alternatives[answer.prediction_id]
        assert alt["shadow"] and alt["variant"] != answer.variant
        assert alt["propensity"] == {"a": 0.75, "b": 0.25}[alt["variant"]]
        pinned = served.serving.predictor("risk_alt").predict([user], "t", variant=alt["variant"])
        assert alt["output"] == pytest.approx(pinned[0].score)


def test_score_alternatives_needs_a_choice_between_variants():
    from headwater import DefinitionError, Service

    m = tiny_model()
    with pytest.raises(DefinitionError, match="score_alternatives logs the variants"):
        Service("x", model=m, score_alternatives=True, owner="g", description="x")
