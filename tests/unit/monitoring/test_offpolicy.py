"""Off-policy evaluation: IPS and self-normalized IPS, intervals clustered by entity, checked
for coverage on simulations whose true rewards are known, and through a real A/B service."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from headwater import Project
from headwater.cli import app
from headwater.definitions import DefinitionError
from headwater.monitoring.offpolicy import OffPolicyError, evaluate
from tests.conftest import write_project
from tests.unit.monitoring.test_feedback import SERVICES
from tests.unit.training.conftest import NOW, visits

BASE = {"a": 0.3, "b": 0.55}  # each variant's mean reward; entities vary around it


def _simulate(rng: np.random.Generator, entities: int = 300) -> pd.DataFrame:
    """Sticky A/B logging (70% of entities on a): each entity sends 1 to 6 requests, all
    answered by its variant, with a reward rate of its own (an entity effect)."""
    rows = []
    for e in range(entities):
        variant = "a" if rng.random() < 0.7 else "b"
        rate = BASE[variant] + rng.uniform(-0.2, 0.2)
        for _ in range(rng.integers(1, 7)):
            rows.append(
                (variant, float(rng.random() < rate), f"e{e}", 0.7 if variant == "a" else 0.3)
            )
    return pd.DataFrame(rows, columns=["variant", "outcome", "entity", "propensity"])


@pytest.mark.parametrize(
    ("policy", "truth"),
    [({"b": 1.0}, BASE["b"]), ({"a": 0.5, "b": 0.5}, (BASE["a"] + BASE["b"]) / 2)],
)
def test_the_intervals_cover_the_true_reward_at_their_level(policy, truth):
    rng = np.random.default_rng(11)
    covered = {"ips": 0, "snips": 0}
    runs = 300
    for _ in range(runs):
        for est in evaluate(_simulate(rng), policy):
            covered[est.estimator] += est.ci_low <= truth <= est.ci_high
    for name, hits in covered.items():
        assert 0.91 <= hits / runs <= 0.99, (name, hits / runs)  # 95% intervals


def test_ignoring_the_clusters_would_have_under_covered():
    """The same simulations with every request its own cluster: the intervals are too
    narrow (sticky routing repeats each entity's rate), which clustering corrects."""
    rng = np.random.default_rng(12)
    naive = 0
    for _ in range(300):
        frame = _simulate(rng)
        frame["entity"] = range(len(frame))
        (ips, _) = evaluate(frame, {"b": 1.0})
        naive += ips.ci_low <= BASE["b"] <= ips.ci_high
    assert naive / 300 < 0.91


def test_a_policy_choosing_an_action_never_logged_is_refused():
    frame = pd.DataFrame(
        {
            "variant": ["a", "a"],
            "outcome": [1.0, 0.0],
            "entity": ["x", "y"],
            "propensity": [1.0, 1.0],
        }
    )
    with pytest.raises(OffPolicyError, match="chooses 'b', which the logging policy never chose"):
        evaluate(frame, {"b": 1.0})
    with pytest.raises(OffPolicyError, match="no logged decision has both a propensity"):
        evaluate(frame.assign(propensity=None), {"a": 1.0})


def test_a_service_s_logged_traffic_estimates_a_candidate_policy(tmp_path):
    folder = write_project(tmp_path / "p", SERVICES)
    with Project(folder, clock=lambda: NOW - timedelta(days=2)) as p:
        p.ingest("visits", visits())
        p.process()
        p.promote("churn", p.train("churn").version)
        rng = np.random.default_rng(5)
        rate = {"a": 0.2, "b": 0.6}  # true conversion rate of each offer
        events = []
        for round_ in range(3):  # every user asks three times: sticky, so clustered
            served = p.serving.predict("offers", [{"user_id": f"u{i}"} for i in range(150)], "t")
            events += [
                {
                    "prediction_id": s.prediction_id,
                    "converted": int(rng.random() < rate[s.variant]),
                    "ts": NOW - timedelta(days=2) + timedelta(minutes=round_ + 1),
                }
                for s in served
            ]
        assert p.ingest("offer_outcomes", events).accepted == len(events)
        p.serving.logger.flush()
        estimates, summary = p.evaluate_policy("offers", "b", days=3)
        assert {e.estimator for e in estimates} == {"ips", "snips"}
        for e in estimates:
            assert e.n == 450 and e.clusters == 150
            assert e.ci_low <= 0.6 <= e.ci_high and e.ci_high - e.ci_low < 0.4
        assert set(summary["logged_share"]) == {"a", "b"}
        out = CliRunner().invoke(
            app,
            ["experiment", "offers", "--evaluate", "a=0,b=1", "--days", "4000", "-p", str(folder)],
        )  # the CLI runs at the real now: a window wide enough to reach the test's clock
        assert out.exit_code == 0, out.output
        assert "450 rewarded decisions of 150 entities" in out.output
        assert "self-normalized" in out.output and "candidate policy: b 100%" in out.output
        with pytest.raises(OffPolicyError, match="unknown variant 'c'"):
            p.evaluate_policy("offers", "c", days=3)


def test_a_service_without_random_routing_cannot_be_evaluated(tmp_path):
    source = SERVICES.replace('routing="ab"', 'routing="champion"')
    folder = write_project(tmp_path / "p", source)
    with (
        Project(folder, clock=lambda: NOW) as p,
        pytest.raises(DefinitionError, match="made no random choice"),
    ):
        p.evaluate_policy("offers", "b")
