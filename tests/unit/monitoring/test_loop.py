"""Retrain on drift, shadow the challenger, promote it only if it wins on live labels."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from headwater import Project
from headwater.definitions.types import to_micros
from headwater.monitoring import loop
from headwater.monitoring.monitor import Monitor
from tests.conftest import write_project
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

LOOP = (
    DEFINITIONS
    + """
from headwater import PromotionPolicy, RetrainPolicy, Service, Variant

watched = Model("watched", label=churned, features=NUMERIC, estimator=logistic, lookback="14d",
                min_rows=50, retrain=RetrainPolicy(on_drift=True, min_labelled=50),
                owner="growth", description="Retrained by the monitor")
fair = Model("fair", label=churned, features=NUMERIC, estimator=logistic, lookback="14d",
             min_rows=50, retrain=RetrainPolicy(on_drift=True, min_labelled=50),
             promotion=PromotionPolicy(metric="auc", max_segment_gap=0.0),
             owner="growth", description="Promoted only if fair across regions")
models.append(fair)
services = [Service("guarded", variants=[Variant("main", watched),
                                         Variant("next", watched, alias="challenger")],
                    routing="shadow", owner="growth", description="Champion + shadow"),
            Service("fair_guarded", variants=[Variant("main", fair),
                                              Variant("next", fair, alias="challenger")],
                    routing="shadow", context=["region"], segments=["region"], owner="growth",
                    description="Champion + shadow, by region")]
"""
)


@pytest.fixture
def looped(tmp_path):
    clock = {"t": NOW}
    with Project(write_project(tmp_path / "p", LOOP), clock=lambda: clock["t"]) as p:
        p.ingest("visits", visits())
        p.process()
        p.promote("watched", p.train("watched").version)
        yield p, clock


def _drifted_predictions(p, clock):
    clock["t"] = NOW + timedelta(days=1)
    profile = p.registry.version("watched", "champion")["profile"]["features"]
    rng = np.random.default_rng(1)
    values = [
        {
            f: float(rng.choice(profile[f]["sample"])) * (5 if f == "visits_7d" else 1)
            for f in profile
        }
        for _ in range(300)
    ]
    rows = [{"user_id": f"d{i}"} for i in range(300)]
    p.serving.predictor("guarded").score(rows, values, [True] * 300, None, "test")


def test_a_drift_alert_retrains_a_challenger_once(looped):
    p, clock = looped
    _drifted_predictions(p, clock)  # the shadow has no version yet: answered all the same
    reports = Monitor(p.monitor_context()).run("guarded", since_us=to_micros(NOW))
    lines: list[str] = []
    actions = loop.retrain_if_needed(p.monitor_context(), reports, lines.append)
    assert [a["action"] for a in actions] == ["retrained"]
    assert p.registry.alias("watched", "challenger") == 2
    history = p.registry.aliases("watched")["challenger"]["history"]
    assert history[-1]["by"] == "monitor" and "visits_7d" in history[-1]["reason"]
    assert (
        loop.retrain_if_needed(p.monitor_context(), reports, lines.append) == []
    )  # not again for that window


def test_the_challenger_is_promoted_only_when_it_wins_on_live_labels(looped, monkeypatch):
    p, clock = looped
    v2 = p.train("watched").version
    p.promote("watched", v2, alias="challenger", by="test", reason="a challenger")
    clock["t"] = NOW - timedelta(days=10)
    p.serving.predict("guarded", [{"user_id": f"u{i}"} for i in range(150)], "test")
    p.serving.predictor("guarded").drain()
    clock["t"] = NOW
    since = to_micros(NOW - timedelta(days=11))
    (kept,) = loop.promote_winners(p.monitor_context(), since, to_micros(NOW), lambda _: None)
    # The same data and a deterministic fit: equal on live labels, so no promotion.
    assert kept["requests"] >= 100 and kept["action"] == "kept"
    assert kept["challenger_metric"] == pytest.approx(kept["champion_metric"])
    assert p.registry.alias("watched", "champion") == 1

    better = iter([0.61, 0.74])  # champion, then challenger
    monkeypatch.setattr(loop, "_live_metric", lambda *a: next(better))
    (won,) = loop.promote_winners(p.monitor_context(), since, to_micros(NOW), lambda _: None)
    assert won["action"] == "promoted" and p.registry.alias("watched", "champion") == v2
    reason = p.registry.aliases("watched")["champion"]["history"][-1]["reason"]
    assert reason.startswith("won on live labels: live auc 0.7400 vs champion v1 0.6100")


def test_a_challenger_that_wins_is_kept_when_its_live_segment_gap_is_too_wide(looped, monkeypatch):
    p, clock = looped
    p.promote("fair", p.train("fair").version, force=True)
    v2 = p.train("fair").version
    p.promote("fair", v2, alias="challenger", by="test", reason="a challenger")
    clock["t"] = NOW - timedelta(days=10)
    rows = [{"user_id": f"u{i}", "region": "north" if i % 2 else "south"} for i in range(150)]
    p.serving.predict("fair_guarded", rows, "test")
    p.serving.predictor("fair_guarded").drain()
    clock["t"] = NOW
    since = to_micros(NOW - timedelta(days=11))
    better = iter([0.61, 0.74])  # champion, then challenger: it wins overall
    monkeypatch.setattr(loop, "_live_metric", lambda *a: next(better))
    actions = loop.promote_winners(p.monitor_context(), since, to_micros(NOW), lambda _: None)
    (kept,) = [a for a in actions if a["model"] == "fair"]
    assert kept["action"] == "kept" and p.registry.alias("fair", "champion") == 1
    assert "between groups north and south of segment region" in kept["verdict"]
