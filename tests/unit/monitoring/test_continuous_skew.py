"""Continuous skew: a server still running an old definition serves values the monitor's
recomputation disagrees with; the ledger counts compared and mismatching values per feature
and day, each new prediction is checked once, the alert names the feature, the entity and
both values, and /metrics exports the counts."""

from __future__ import annotations

import orjson
import pytest
from fastapi.testclient import TestClient

from headwater import Project
from headwater.definitions.types import to_micros
from headwater.monitoring.ledger import DAY_US, Ledger
from headwater.monitoring.monitor import Monitor
from headwater.monitoring.service import run_monitor
from tests.conftest import write_project
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

TREND = (
    DEFINITIONS
    + """
from headwater import Derived, Service
features.append(Derived("visit_trend", inputs=["visits_1d", "visits_7d"],
                        fn=lambda c: c.visits_1d / (c.visits_7d + 1.0), owner="growth",
                        description="Today against the week"))
trend = Model("trend", label=churned, features=NUMERIC + ["visit_trend"], estimator=logistic,
              lookback="14d", min_rows=50, owner="growth", description="Churn with a trend")
models.append(trend)
services = [Service("trend_risk", model=trend, owner="growth", description="Churn risk")]
"""
)


def test_a_changed_definition_served_from_a_stale_server_is_caught(tmp_path):
    folder = write_project(tmp_path / "p", TREND)
    clock = {"t": NOW}
    with Project(folder, clock=lambda: clock["t"]) as server:  # started before the change
        server.ingest("visits", visits())
        server.process()
        server.promote("trend", server.train("trend").version)
        changed = TREND.replace("(c.visits_7d + 1.0)", "(c.visits_7d + 2.0)")
        (folder / "definitions.py").write_text(changed)  # deployed; this server not restarted
        users = [{"user_id": f"u{i}"} for i in range(150)]
        served = server.serving.predict("trend_risk", users, "t")
        server.serving.logger.flush()
        with Project(folder, clock=lambda: clock["t"]) as monitor:
            alerts: list[dict] = []
            watcher = Monitor(monitor.monitor_context(), alert=alerts.append)
            since, until = to_micros(NOW) - DAY_US, to_micros(NOW) + 1
            found = watcher.skew("trend_risk", since, until, record=True)
            known = sum(not x.unknown_entity for x in served)
            assert found["checked"] == known
            bad = {x.entity["user_id"]: x for x in served if x.features["visits_1d"] > 0}
            assert found["mismatched"] == {
                "visit_trend": len(bad), "visits_1d": 0, "visits_7d": 0, "visits_30d": 0,
            }  # fmt: skip
            assert found["compared"]["visit_trend"] == known
            assert len(alerts) == len(bad) > 0
            for alert in alerts:
                x = bad[alert["entity"]["user_id"]]
                assert alert["feature"] == "visit_trend" and alert["owner"] == "growth"
                assert alert["online"] == pytest.approx(x.features["visit_trend"])
                f = x.features
                assert alert["offline"] == pytest.approx(f["visits_1d"] / (f["visits_7d"] + 2.0))
            rows = Ledger(monitor.monitor_context()).skew(since, until, "trend_risk")
            day = to_micros(NOW) // DAY_US
            assert ("trend_risk", "visit_trend", day, known, len(bad)) in rows
            # the next run checks only what is new: nothing; the totals stay, no new alert
            again = watcher.skew("trend_risk", since, until, record=True)
            assert again["checked"] == 0 and again["mismatched"] == found["mismatched"]
            assert len(alerts) == len(bad)
            logged = [orjson.loads(r.payload) for r in monitor.log.read("alerts", 0, 10**6)]
            assert sum(a.get("kind") == "skew" for a in logged) == len(bad)
            # headwater monitor runs the same continuous check, and /metrics exports it
            run = run_monitor(monitor.monitor_context(), "trend_risk", days=2)
            assert run.skews["trend_risk"]["mismatched"]["visit_trend"] == len(bad)
            app = monitor.app()
            app.state.metrics.record_monitor(run.reports, run.skews)
            with TestClient(app, base_url="http://localhost") as client:
                text = client.get("/metrics").text
            assert (
                'headwater_monitor_skew_mismatched{feature="visit_trend",service="trend_risk"} '
                f"{float(len(bad))}" in text
            )
            compared = 'headwater_monitor_skew_compared{feature="visits_7d",service="trend_risk"}'
            assert f"{compared} {float(known)}" in text


def test_the_server_s_monitor_loop_hands_the_skew_to_metrics(tmp_path):
    import threading

    from headwater.monitoring.service import monitor_every

    folder = write_project(tmp_path / "p", TREND)
    with Project(folder, clock=lambda: NOW) as p:
        p.ingest("visits", visits())
        p.process()
        p.promote("trend", p.train("trend").version)
        p.serving.predict("trend_risk", [{"user_id": f"u{i}"} for i in range(20)], "t")
        p.serving.logger.flush()
        stop, seen = threading.Event(), []

        def record(reports, skews):
            seen.append((reports, skews))
            stop.set()

        monitor_every(p.monitor_context(), 0.01, stop, record)
    ((reports, skews),) = seen
    assert {r.service for r in reports} == {"trend_risk"}
    assert skews["trend_risk"]["compared"]["visit_trend"] == 20
    assert skews["trend_risk"]["mismatched"]["visit_trend"] == 0
