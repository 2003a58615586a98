"""The monitor's ledger against the recompute path: the same reports, however it advanced."""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import timedelta

import numpy as np
import pytest

from headwater import Project
from headwater.definitions.types import to_micros
from headwater.monitoring import rollup
from headwater.monitoring.ledger import DAY_US, Ledger
from headwater.monitoring.monitor import Monitor, logged_predictions
from headwater.stores.monitor.duckdb import DuckDBMonitorStore
from headwater.training import evaluation
from tests.conftest import write_project
from tests.unit.serving.test_predict import SERVICES
from tests.unit.training.conftest import NOW, visits

# Predictions on four days, three old enough for the 7-day label at NOW; the last step goes
# back in time, so the log is not in time order.
STEPS = (
    (NOW - timedelta(days=12), "risk", range(0, 100)),
    (NOW - timedelta(days=12, hours=-5), "risk_ab", range(0, 150)),
    (NOW - timedelta(days=9), "risk", range(50, 150)),
    (NOW - timedelta(days=9, hours=-1), "risk_shadow", range(0, 80)),
    (NOW - timedelta(days=3), "risk", range(0, 50)),
    (NOW - timedelta(days=11), "risk", range(100, 130)),
)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A project whose ledger at ``steps.duckdb`` was advanced after every step."""
    root = tmp_path_factory.mktemp("incremental")
    clock = {"t": NOW}
    with Project(write_project(root / "p", SERVICES), clock=lambda: clock["t"]) as p:
        p.ingest("visits", visits())
        p.process()
        p.promote("churn", p.train("churn").version)
        p.promote("churn", p.train("churn").version, alias="challenger", by="t", reason="ab")
        steps = Ledger(p.monitor_context(), DuckDBMonitorStore(root / "steps.duckdb"), batch=64)
        for at, service, users in STEPS:
            clock["t"] = at
            p.serving.predict(service, [{"user_id": f"u{i}"} for i in users], "test")
            p.serving.predictor(service).drain()
            steps.advance()
        clock["t"] = NOW
        steps.advance()
        yield p, clock, steps


def comparable(reports):
    """Reports as plain data, NaN made comparable."""
    return [
        {
            k: (repr(v) if k in ("drift", "metrics") else v)
            for k, v in asdict(r).items()
            if k != "owner"
        }
        for r in reports
    ]


@pytest.mark.parametrize(
    "since, until",
    [
        (NOW - timedelta(days=14), None),
        (NOW - timedelta(days=12), NOW - timedelta(days=11)),
        (NOW - timedelta(days=11), NOW - timedelta(days=10)),  # logged after later days
        (NOW - timedelta(days=9, hours=2), NOW - timedelta(days=8, hours=12)),  # not day-aligned
        (NOW - timedelta(days=4), None),
    ],
)
def test_reports_equal_the_recompute_path(labelled, since, until):
    p, _, _ = labelled
    window = {
        "since_us": to_micros(since),
        "until_us": None if until is None else to_micros(until),
    }
    monitor = Monitor(p.monitor_context())
    fast = monitor.run(None, **window, alert=False)
    slow = monitor.run(None, **window, alert=False, recompute=True)
    assert fast and comparable(fast) == comparable(slow)
    assert {(r.service, r.variant) for r in fast} <= {
        ("risk", "champion"),
        ("risk_ab", "a"),
        ("risk_ab", "b"),
        ("risk_shadow", "main"),
    }


def test_reports_equal_the_recompute_path_when_the_clock_is_earlier(labelled):
    # The ledger settled the labels at NOW; a run at an earlier clock must not see them yet.
    p, clock, _ = labelled
    clock["t"] = NOW - timedelta(days=4, hours=12)
    try:
        window = {"since_us": to_micros(NOW - timedelta(days=14)), "alert": False}
        fast, slow = (
            Monitor(p.monitor_context()).run(**window),
            Monitor(p.monitor_context()).run(**window, recompute=True),
        )
        assert comparable(fast) == comparable(slow)
        assert any(r.labelled == 0 for r in fast) and any(r.labelled for r in fast)
    finally:
        clock["t"] = NOW


def test_daily_aggregates_equal_the_metrics_of_each_day(labelled):
    p, _, _ = labelled
    since, until = to_micros(NOW - timedelta(days=14)), to_micros(NOW) + 1
    rows = Ledger(p.monitor_context()).performance(since, until)
    frame = logged_predictions(p.monitor_context(), None, since, until)
    frame = frame[~frame["shadow"].astype(bool)].reset_index(drop=True)
    monitor = Monitor(p.monitor_context())
    labels = np.full(len(frame), np.nan)
    for (name, model), group in frame.groupby(["service", "model"]):
        found, _ = monitor.labels_for(
            p.definitions.services[name], p.model(model), group.reset_index(drop=True), p.now()
        )
        labels[group.index] = found.astype(float).to_numpy()
    frame["label"], frame["day"] = labels, frame["ts_us"] // DAY_US
    keys = ["service", "variant", "model", "model_version"]
    assert {(r.service, r.variant, r.day) for r in rows if r.day is not None} == {
        (s, v, d) for (s, v, _, _, d), _ in frame.groupby([*keys, "day"])
    }
    for row in rows:
        mine = frame[
            (frame["service"] == row.service)
            & (frame["variant"] == row.variant)
            & (frame["model_version"] == row.version)
        ]
        if row.day is not None:
            mine = mine[mine["day"] == row.day]
        done = mine[mine["label"].notna()]
        assert (row.predictions, row.labelled) == (len(mine), len(done))
        assert (row.first_us, row.last_us) == (mine["ts_us"].min(), mine["ts_us"].max())
        if not len(done):
            assert row.metrics == {} and row.label_delay_s is None
            continue
        assert row.label_delay_s == pytest.approx(7 * 86_400)
        y, s = done["label"].to_numpy(), done["output"].to_numpy(dtype=float)
        expected = evaluation.score_metrics(("auc", "log_loss", "brier"), y, s, "classification", 1)
        expected["accuracy"] = float(np.mean((s >= 0.5) == (y == 1)))
        assert row.metrics == pytest.approx(expected, nan_ok=True)


def test_advancing_in_steps_equals_one_advance_at_the_end(labelled, tmp_path):
    p, _, steps = labelled
    once = Ledger(p.monitor_context(), DuckDBMonitorStore(tmp_path / "once.duckdb"))
    progress = once.advance()
    # every record is read, shadows (80, not reported) included; one day is not mature yet
    assert progress.predictions == p.log.end_offset("predictions") == 590
    assert progress.matured == 590 - 80 - 50
    assert steps.snapshot() == once.snapshot()
    assert once.advance().consumed == 0  # caught up: a second advance finds nothing


def test_a_commit_that_fails_halfway_leaves_nothing_behind(labelled, tmp_path, monkeypatch):
    p, _, _ = labelled
    reference = Ledger(
        p.monitor_context(), DuckDBMonitorStore(tmp_path / "reference.duckdb"), batch=100
    )
    reference.advance()
    broken = Ledger(p.monitor_context(), DuckDBMonitorStore(tmp_path / "broken.duckdb"), batch=100)
    calls = {"touch": 0, "refresh": 0}

    def dying(step, fails):
        real = getattr(rollup, step)

        def run(con, touched):
            calls[step] += 1
            if fails(calls[step]):
                con.execute("DELETE FROM outcomes")  # half done, then the process "dies"
                raise RuntimeError("killed")
            real(con, touched)

        return run

    monkeypatch.setattr(rollup, "touch", dying("touch", lambda n: n % 4 == 0))
    monkeypatch.setattr(rollup, "refresh", dying("refresh", lambda n: n == 1))
    for _ in range(100):
        try:
            broken.advance()
            break
        except RuntimeError:
            continue
    assert calls["touch"] > 6 and calls["refresh"] > 1
    monkeypatch.undo()
    assert broken.snapshot() == reference.snapshot()


def test_rolling_ranges_sum_the_days(labelled):
    p, _, _ = labelled
    rows = Ledger(p.monitor_context()).performance(
        to_micros(NOW - timedelta(days=14)), to_micros(NOW)
    )
    whole = [r for r in rows if r.day is None and r.service == "risk"]
    days = [r for r in rows if r.day is not None and r.service == "risk"]
    assert len(whole) == 1 and len(days) == 4
    assert whole[0].predictions == sum(d.predictions for d in days) == 280
    assert whole[0].labelled == sum(d.labelled for d in days) == 230
    assert whole[0].label_coverage == pytest.approx(230 / 280)
    assert not math.isnan(whole[0].metrics["auc"])


def test_a_window_reads_only_its_span_of_the_log(labelled, tmp_path):
    p, _, _ = labelled
    since, until = to_micros(NOW - timedelta(days=3, hours=1)), to_micros(NOW - timedelta(days=2))
    ledger = Ledger(p.monitor_context(), DuckDBMonitorStore(tmp_path / "fresh.duckdb"))
    assert ledger.read_ranges(since, until) == {0: [(0, None)]}  # nothing indexed: all of it
    ledger.advance()  # then the index bounds what a window reads
    ranges = ledger.read_ranges(since, until)
    (lo, hi), (tail, rest) = ranges[0]
    assert hi - lo + 1 == 50 and (tail, rest) == (p.log.end_offset("predictions"), None)
    narrow = logged_predictions(p.monitor_context(), None, since, until, ranges)
    assert list(narrow["prediction_id"]) == list(
        logged_predictions(p.monitor_context(), None, since, until)["prediction_id"]
    )
    assert len(narrow) == 50
