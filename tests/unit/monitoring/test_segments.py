"""Live monitoring by segment: each group of a service's context field or of a served
feature gets its own metric on the labelled predictions, checked against brute force."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from sklearn.metrics import roc_auc_score

from headwater import Project
from headwater.definitions.types import to_micros
from headwater.monitoring.monitor import Monitor
from headwater.monitoring.report import render
from tests.conftest import tiny_model, write_project
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

SEGMENTED = (
    DEFINITIONS
    + """
from headwater import Segment, Service

churn_seg = Model("churn_seg", label=churned, features=NUMERIC, estimator=logistic,
                  lookback="14d", min_rows=50, segments=[Segment("visits_7d", bins=(2, 5))],
                  owner="growth", description="Churn, reported by segment")
models.append(churn_seg)
services = [Service("risk", model=churn_seg, context=["region"], segments=["region"],
                    owner="growth", description="Churn risk by region")]
"""
)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    clock = {"t": NOW}
    folder = write_project(tmp_path_factory.mktemp("segments") / "p", SEGMENTED)
    with Project(folder, clock=lambda: clock["t"]) as p:
        p.ingest("visits", visits())
        p.process()
        p.promote("churn_seg", p.train("churn_seg").version)
        yield p, clock


def test_the_monitor_reports_each_segment_against_brute_force(monitored):
    p, clock = monitored
    clock["t"] = NOW - timedelta(days=10)
    users = [f"u{i}" for i in range(150)]
    regions = {u: ("north" if i % 3 else "south") for i, u in enumerate(users)}
    served = p.serving.predict("risk", [{"user_id": u, "region": regions[u]} for u in users], "t")
    clock["t"] = NOW
    (report,) = Monitor(p.monitor_context()).run(
        "risk", since_us=to_micros(NOW - timedelta(days=11))
    )
    t = to_micros(NOW - timedelta(days=10))
    events = [
        (r.event_time, orjson.loads(r.payload)["user_id"]) for r in p.log.read("visits", 0, 10**7)
    ]
    truth = {
        u: int(not any(v == u and t <= ts < t + 7 * 86_400_000_000 for ts, v in events))
        for u in users
    }
    scores = {u: x.score for u, x in zip(users, served, strict=True)}
    region = report.segments["region"]
    assert set(region["groups"]) == {"north", "south"}
    for name, group in region["groups"].items():
        mine = [u for u in users if regions[u] == name]
        assert group["rows"] == len(mine)
        assert group["auc"] == pytest.approx(
            roc_auc_score([truth[u] for u in mine], [scores[u] for u in mine])
        )
        assert group["positive_rate"] == pytest.approx(sum(truth[u] for u in mine) / len(mine))
    aucs = [g["auc"] for g in region["groups"].values()]
    assert region["gap"]["value"] == pytest.approx(max(aucs) - min(aucs))
    # the model's own segment, from the served feature values
    visits_7d = report.segments["visits_7d"]["groups"]
    assert sum(g["rows"] for g in visits_7d.values()) == 150
    assert set(visits_7d) <= {"< 2", "[2, 5)", ">= 5", "(missing)"}
    page = render(p.monitor_context(), "churn_seg", days=11)
    assert "Segment region" in page and "Largest gap in auc" in page


def test_a_segment_must_be_logged_by_the_service():
    from headwater import DefinitionError, Service

    m = tiny_model()
    with pytest.raises(DefinitionError, match="segment 'plan' is neither a context field"):
        Service("x", model=m, segments=["plan"], owner="g", description="x")
