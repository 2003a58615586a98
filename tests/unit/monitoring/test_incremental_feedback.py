"""The ledger joins feedback by prediction id: late, corrected, out of order, or even before
the prediction it names, and always into the day the prediction was made."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import orjson
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from headwater import Project
from headwater.definitions.types import to_micros
from headwater.log.base import NewRecord
from headwater.monitoring.ledger import DAY_US, Ledger
from headwater.monitoring.monitor import Monitor
from headwater.stores.monitor.duckdb import DuckDBMonitorStore
from tests.conftest import write_project
from tests.unit.monitoring.test_feedback import SERVICES
from tests.unit.monitoring.test_incremental import comparable
from tests.unit.training.conftest import NOW, visits

DAY_A, DAY_B = NOW - timedelta(days=2), NOW - timedelta(days=1)
HOUR = timedelta(hours=1)


class Truth:
    """Every feedback event sent, in log order: the oracle's latest-wins and first-seen."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, int]] = []  # (prediction id, outcome, time)

    def send(self, p, events: list[tuple[str, int, object]]) -> None:
        rows = [
            {"prediction_id": pid, "converted": v, "ts": at, "event_id": f"e{len(self.events) + i}"}
            for i, (pid, v, at) in enumerate(events)
        ]
        assert p.ingest("offer_outcomes", rows).accepted == len(rows)
        self.events += [(pid, v, to_micros(at)) for pid, v, at in events]

    def of(self, pid: str) -> tuple[int, int] | None:
        mine = [(t, n, v) for n, (i, v, t) in enumerate(self.events) if i == pid]
        return (max(mine)[2], min(mine)[0]) if mine else None


def check(p, steps: Ledger) -> None:
    """The ledger advanced so far reports what the recompute path does."""
    steps.advance()
    window = {"since_us": to_micros(NOW - timedelta(days=3)), "alert": False}
    fast = Monitor(p.monitor_context()).run("offers", **window)
    assert comparable(fast) == comparable(
        Monitor(p.monitor_context()).run("offers", **window, recompute=True)
    )


@pytest.fixture
def offers(tmp_path):
    clock = {"t": DAY_A}
    with Project(write_project(tmp_path / "p", SERVICES), clock=lambda: clock["t"]) as p:
        p.ingest("visits", visits())
        p.process()
        p.promote("churn", p.train("churn").version)
        yield (
            p,
            clock,
            Ledger(p.monitor_context(), DuckDBMonitorStore(tmp_path / "steps.duckdb"), batch=32),
        )


def test_late_corrected_and_early_feedback_land_on_the_right_day(offers, tmp_path):
    p, clock, steps = offers
    truth, rng = Truth(), np.random.default_rng(7)
    day_a = p.serving.predict("offers", [{"user_id": f"u{i}"} for i in range(120)], "test")
    check(p, steps)

    clock["t"] = DAY_A + 6 * HOUR  # the early feedback of day A; a sixth never comes
    early = [
        (x.prediction_id, int(rng.random() < x.score), DAY_A + (1 + i % 5) * HOUR)
        for i, x in enumerate(day_a)
        if i % 6 != 5
    ]
    truth.send(p, early)
    check(p, steps)

    clock["t"] = DAY_B
    day_b = p.serving.predict("offers", [{"user_id": f"u{i}"} for i in range(80)], "test")
    check(p, steps)

    clock["t"] = DAY_B + 8 * HOUR  # day B's feedback, and late corrections of day A
    truth.send(p, [(x.prediction_id, int(rng.random() < x.score), DAY_B + 2 * HOUR) for x in day_b])
    corrected = [(pid, 1 - v, DAY_A + 30 * HOUR) for pid, v, _ in early[::7]]
    truth.send(p, corrected)
    check(p, steps)

    # Out of order: an event older than the label it would replace loses (latest event time
    # wins), though it moves when the ground truth was first known.
    truth.send(p, [(pid, v, DAY_A + 30 * HOUR - 29 * HOUR) for pid, v, _ in corrected[:3]])
    # Feedback first, its prediction logged later: joined when the prediction arrives.
    truth.send(p, [("early-bird", 1, DAY_B + 7 * HOUR)])
    check(p, steps)
    doc = {**orjson.loads(p.log.read("predictions", 0, 1)[0].payload)}
    doc.update(prediction_id="early-bird", ts_us=to_micros(DAY_B + HOUR), shadow=False)
    p.log.append("predictions", [NewRecord("early-bird", doc["ts_us"], orjson.dumps(doc))], 0)
    check(p, steps)

    once = Ledger(p.monitor_context(), DuckDBMonitorStore(tmp_path / "once.duckdb"))
    once.advance()
    assert steps.snapshot() == once.snapshot()

    served = {x.prediction_id: x for x in day_a + day_b}
    rows = once.performance(to_micros(DAY_A), to_micros(NOW))
    assert {(r.day, r.variant) for r in rows if r.day is not None} <= {
        (to_micros(d) // DAY_US, v) for d in (DAY_A, DAY_B) for v in "ab"
    }
    for row in [r for r in rows if r.day is not None]:
        mine = [x for x in served.values() if x.variant == row.variant]
        mine = [x for x in mine if (x in day_a) == (row.day == to_micros(DAY_A) // DAY_US)]
        extra = int(row.variant == doc["variant"] and row.day == to_micros(DAY_B) // DAY_US)
        assert row.predictions == len(mine) + extra
        known = [(x, truth.of(x.prediction_id)) for x in mine if truth.of(x.prediction_id)]
        assert row.labelled == len(known) + extra
        if extra:
            known.append((None, truth.of("early-bird")))
        y = [k[0] for _, k in known]
        s = [x.score if x else doc["output"] for x, _ in known]
        assert row.metrics["auc"] == pytest.approx(roc_auc_score(y, s))
        assert row.metrics["log_loss"] == pytest.approx(log_loss(y, s))
        ts = [to_micros(DAY_A if x in day_a else DAY_B) if x else doc["ts_us"] for x, _ in known]
        delays = [max(k[1] - t, 0) / 1e6 for (_, k), t in zip(known, ts, strict=True)]
        assert row.label_delay_s == pytest.approx(float(np.median(delays)))


def test_a_prediction_logged_twice_counts_once(offers, tmp_path):
    # The embedded log keeps one record per event id; a Kafka log may hold a record twice.
    p, _, steps = offers
    p.serving.predict("offers", [{"user_id": f"u{i}"} for i in range(10)], "test")
    steps.advance()
    records = p.log.read("predictions", 0, 100)
    again = [NewRecord(f"again-{r.offset}", r.event_time, r.payload) for r in records[:4]]
    p.log.append("predictions", again + again[:1], 0)  # across batches and within one
    steps.advance()
    assert len(steps.snapshot()["outcomes"]) == 10
    once = Ledger(p.monitor_context(), DuckDBMonitorStore(tmp_path / "once.duckdb"))
    once.advance()
    assert once.snapshot() == steps.snapshot()
