"""The monitor: ground truth joined to logged predictions, drift, alerts."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import orjson
import pytest
from sklearn.metrics import roc_auc_score

from headwater import Project
from headwater.definitions.types import to_micros
from headwater.monitoring.monitor import Monitor
from tests.conftest import write_project
from tests.unit.serving.test_predict import SERVICES
from tests.unit.training.conftest import NOW, visits

LOCAL = "http://localhost"  # the server answers loopback Host names only


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    clock = {"t": NOW}
    folder = write_project(tmp_path_factory.mktemp("monitored") / "p", SERVICES)
    with Project(folder, clock=lambda: clock["t"]) as p:
        p.ingest("visits", visits())
        p.process()
        p.promote("churn", p.train("churn").version)
        yield p, clock


def test_ground_truth_joins_predictions_and_gives_the_performance(monitored):
    p, clock = monitored
    clock["t"] = NOW - timedelta(days=10)
    users = [f"u{i}" for i in range(150)]
    served = p.serving.predict("risk", [{"user_id": u} for u in users], "test")
    clock["t"] = NOW
    since = to_micros(NOW - timedelta(days=11))
    (report,) = [
        r for r in Monitor(p.monitor_context()).run("risk", since_us=since) if r.service == "risk"
    ]
    assert report.predictions == 150 and report.labelled == 150 and report.label_coverage == 1
    # Brute force: churned means no visit in [t, t + 7 days).
    t = to_micros(NOW - timedelta(days=10))
    events = [
        (r.event_time, orjson.loads(r.payload)["user_id"]) for r in p.log.read("visits", 0, 10**7)
    ]
    truth = [
        int(not any(u == user and t <= ts < t + 7 * 86_400_000_000 for ts, u in events))
        for user in users
    ]
    scores = [x.score for x in served]
    assert report.metrics["auc"] == pytest.approx(roc_auc_score(truth, scores))
    assert report.owner == "growth" and report.version == 1


def test_drifted_features_raise_one_alert_per_window(monitored):
    p, clock = monitored
    clock["t"] = NOW + timedelta(days=1)
    predictor = p.serving.predictor("risk")
    profile = p.registry.version("churn", "champion")["profile"]["features"]
    rng = np.random.default_rng(0)
    rows, values = [], []
    for i in range(400):
        row = {f: float(rng.choice(profile[f]["sample"])) for f in profile}
        row["visits_7d"] *= 5  # the drift the monitor must find
        rows.append({"user_id": f"z{i}"})
        values.append(row)
    predictor.score(rows, values, [True] * len(rows), None, "test")
    alerts: list[dict] = []
    monitor = Monitor(p.monitor_context(), alert=alerts.append)
    since = to_micros(NOW + timedelta(hours=12))
    (report,) = monitor.run("risk", since_us=since)
    levels = {d.name: d.level for d in report.drift}
    assert levels["visits_7d"] == "alert"
    assert levels["visits_1d"] == "ok" and levels["visits_30d"] == "ok"
    drifted = [a for a in alerts if a["column"] == "visits_7d"]
    assert drifted and "PSI" in " ".join(drifted[0]["reasons"])
    assert drifted[0]["owner"] == "growth" and drifted[0]["model_version"] == 1
    logged = p.log.end_offset("alerts")
    monitor.run("risk", since_us=since)
    assert p.log.end_offset("alerts") == logged  # the same window alerts once


def test_skew_between_served_and_recomputed_features_is_zero_and_detected(monitored):
    p, clock = monitored
    clock["t"] = NOW + timedelta(days=2)
    users = [{"user_id": f"u{i}"} for i in range(120)]
    served = p.serving.predict("risk", users, "test")
    since = to_micros(NOW + timedelta(days=2) - timedelta(minutes=1))
    monitor = Monitor(p.monitor_context())
    report = monitor.skew("risk", since, to_micros(NOW + timedelta(days=3)))
    assert report["checked"] == sum(not x.unknown_entity for x in served) > 100
    assert report["rates"] and all(rate == 0 for rate in report["rates"].values())
    # A prediction served from a stale value is caught, with both values.
    predictor = p.serving.predictor("risk")
    values = p.online_features(users[:1], list(report["rates"]))
    values[0]["visits_30d"] += 3
    predictor.score(users[:1], values, [True], None, "test", features_at=to_micros(clock["t"]))
    alerts: list[dict] = []
    found = Monitor(p.monitor_context(), alert=alerts.append).skew(
        "risk", since, to_micros(NOW + timedelta(days=3))
    )
    (mismatch,) = found["mismatches"]
    assert mismatch["feature"] == "visits_30d"
    assert mismatch["online"] == mismatch["offline"] + 3
    assert alerts[0]["kind"] == "skew"


def test_skew_over_unknown_entities_only_checks_nothing(monitored):
    p, clock = monitored
    clock["t"] = NOW + timedelta(days=4)
    served = p.serving.predict("risk", [{"user_id": "nobody"}, {"user_id": "no-one"}], "test")
    assert all(x.unknown_entity for x in served)  # served with the defaults
    since = to_micros(clock["t"] - timedelta(minutes=1))
    report = Monitor(p.monitor_context()).skew("risk", since, to_micros(clock["t"]) + 1)
    assert report == {"checked": 0, "rates": {}, "mismatches": []}


def test_the_html_report_shows_performance_drift_and_predictions(monitored):
    from html.parser import HTMLParser

    from headwater.monitoring.report import render

    p, clock = monitored
    clock["t"] = NOW + timedelta(days=3)
    page = render(p.monitor_context(), "churn", days=14)
    assert page.startswith("<!doctype html>") and "<script" not in page
    assert "Live auc by day" in page and page.count("<svg") >= 3
    assert "visits_7d" in page and 'class="alert"' in page
    assert "Predictions: live vs reference" in page

    class Depth(HTMLParser):
        open_tags: list[str] = []

        def handle_starttag(self, tag, attrs):
            if tag != "meta":
                self.open_tags.append(tag)

        def handle_startendtag(self, tag, attrs):  # <rect/>: opened and closed at once
            pass

        def handle_endtag(self, tag):
            assert self.open_tags.pop() == tag

    parser = Depth()
    parser.feed(page)
    assert parser.open_tags == []  # every element is closed where it was opened


def test_monitor_figures_are_exported_on_metrics(monitored):
    from fastapi.testclient import TestClient

    p, clock = monitored
    clock["t"] = NOW
    app = p.app()
    app.state.metrics.record_monitor(
        Monitor(p.monitor_context()).run("risk", since_us=to_micros(NOW - timedelta(days=11)))
    )
    with TestClient(app, base_url=LOCAL) as client:
        text = client.get("/metrics").text
    assert 'headwater_monitor_label_coverage{model="churn",service="risk"' in text
    assert 'headwater_monitor_metric{metric="auc",model="churn"' in text
    assert 'headwater_monitor_psi{column="visits_7d"' in text
