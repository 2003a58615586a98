"""Ground truth by prediction id: late, missing, duplicate and corrected feedback."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from headwater import Project
from headwater.definitions import DefinitionError
from headwater.definitions.types import to_micros
from headwater.monitoring.experiment import analyze
from headwater.monitoring.monitor import Monitor, experiment_outcomes
from headwater.monitoring.report import render
from tests.conftest import write_project
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

SERVICES = (
    DEFINITIONS
    + """
from headwater import Feedback, Service, Variant

outcomes = Stream("offer_outcomes", fields={"prediction_id": "string", "converted": "int",
                                            "ts": "timestamp"},
                  key="prediction_id", time="ts", owner="growth",
                  description="Whether the offer shown with a prediction converted")
services = [
    Service("offers", variants=[Variant("a", models[0]), Variant("b", models[0])],
            routing="ab", feedback=Feedback(outcomes, field="converted"),
            owner="growth", description="Offers, judged by conversions"),
]
"""
)


@pytest.fixture
def offers(tmp_path):
    clock = {"t": NOW - timedelta(days=2)}
    folder = write_project(tmp_path / "p", SERVICES)
    with Project(folder, clock=lambda: clock["t"]) as p:
        p.ingest("visits", visits())
        p.process()
        p.promote("churn", p.train("churn").version)
        yield p, clock


def test_feedback_joins_by_prediction_id_late_missing_duplicate_and_corrected(offers):
    p, clock = offers
    served = p.serving.predict("offers", [{"user_id": f"u{i}"} for i in range(120)], "test")
    at = NOW - timedelta(days=2)
    rng = np.random.default_rng(4)
    truth: dict[str, int] = {}
    events = []
    for i, pred in enumerate(served):
        if i % 6 == 5:
            continue  # missing: never labelled
        label = int(rng.random() < pred.score)
        delay = timedelta(hours=1 + i % 5)
        events.append({"prediction_id": pred.prediction_id, "converted": label, "ts": at + delay})
        truth[pred.prediction_id] = label
        if i % 10 == 0:  # a correction, later: the latest event wins
            truth[pred.prediction_id] = 1 - label
            events.append(
                {
                    "prediction_id": pred.prediction_id,
                    "converted": 1 - label,
                    "ts": at + delay + timedelta(hours=3),
                }
            )
    events.append({"prediction_id": "never-served", "converted": 1, "ts": at})  # ignored
    events = [{**e, "event_id": f"e{n}"} for n, e in enumerate(events)]
    clock["t"] = at + timedelta(hours=3)  # time passes: only the early feedback is in
    early = [e for e in events if e["ts"] <= clock["t"]]
    assert p.ingest("offer_outcomes", early).accepted == len(early)
    assert p.ingest("offer_outcomes", early[:5]).duplicates == 5  # resent: kept once
    since = to_micros(NOW - timedelta(days=3))
    first = Monitor(p.monitor_context()).run("offers", since_us=since, alert=False)
    assert 0 < sum(r.labelled for r in first) < len(truth)

    clock["t"] = NOW  # the late feedback arrives
    late = [e for e in events if e["ts"] > at + timedelta(hours=3)]
    assert p.ingest("offer_outcomes", late).accepted == len(late)
    reports = Monitor(p.monitor_context()).run("offers", since_us=since, alert=False)
    assert {r.variant for r in reports} == {"a", "b"}
    assert sum(r.predictions for r in reports) == 120
    assert sum(r.labelled for r in reports) == len(truth) == 100
    by_id = {pred.prediction_id: pred for pred in served}
    for r in reports:
        mine = [i for i in truth if by_id[i].variant == r.variant]
        assert r.labelled == len(mine)
        assert r.label_coverage == pytest.approx(
            len(mine) / sum(x.variant == r.variant for x in served)
        )
        y = [truth[i] for i in mine]
        s = [by_id[i].score for i in mine]
        assert r.metrics["auc"] == pytest.approx(roc_auc_score(y, s))
        assert r.metrics["log_loss"] == pytest.approx(log_loss(y, s))
        assert 3600 <= r.label_delay_s <= 5 * 3600

    outcomes = experiment_outcomes(p.monitor_context(), "offers", since, to_micros(NOW) + 1)
    assert len(outcomes) == 100
    expected = {v: np.mean([truth[i] for i in truth if by_id[i].variant == v]) for v in "ab"}
    stats, _ = analyze(outcomes)
    assert {s.variant: s.mean for s in stats} == pytest.approx(expected)

    html = render(p.monitor_context(), "churn", days=3)
    assert "Experiment: offers (ab)" in html and "Outcome: feedback; higher is better" in html
    for s in stats:
        assert f"{s.variant} (n={s.n:,})" in html and f"{s.mean:.4g}" in html
    assert "two-proportion z-test" in html and "<b>" in html  # the test and the verdict


def test_feedback_fields_must_exist(offers):
    from headwater import Feedback, Service

    p, _ = offers
    stream = p.definitions.streams["offer_outcomes"]
    with pytest.raises(DefinitionError, match="convertd"):
        Service(
            "x",
            model=p.definitions.models["churn"],
            feedback=Feedback(stream, field="convertd"),
            owner="g",
            description="x",
        )
