"""Training sets accept pandas, polars and Arrow spines, and refuse unusable ones clearly."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from headwater import Project
from headwater.training.sets import SpineError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def project(small_project):
    with Project(small_project, clock=lambda: NOW) as p:
        events = pd.DataFrame(
            {
                "user_id": ["a", "a", "b", "a"],
                "amount": [1.0, 2.0, 4.0, 8.0],
                "status": ["paid", "paid", "paid", "failed"],
                "ts": [
                    NOW - timedelta(days=3),
                    NOW - timedelta(minutes=30),
                    NOW - timedelta(hours=2),
                    NOW - timedelta(minutes=5),
                ],
            }
        )
        assert p.ingest("orders", events).accepted == 4  # a DataFrame goes in as it is
        yield p


def test_pandas_polars_and_arrow_spines_give_the_same_rows(project):
    times = [NOW, NOW - timedelta(hours=1), NOW]
    frame = pd.DataFrame({"user_id": ["a", "a", "c"], "timestamp": times})
    names = ["spend_1h", "spend_7d", "spend_lifetime"]
    from_pandas = project.training_set(frame, names)
    from_polars = project.training_set(pl.from_pandas(frame), names, output="arrow")
    from_arrow = project.training_set(pa.Table.from_pandas(frame), names, output="arrow")
    assert from_pandas[names].to_dict("records") == [
        {"spend_1h": 2.0, "spend_7d": 3.0, "spend_lifetime": 3.0},
        {"spend_1h": 0.0, "spend_7d": 1.0, "spend_lifetime": 1.0},
        {"spend_1h": 0.0, "spend_7d": 0.0, "spend_lifetime": 0.0},
    ]
    assert from_polars.to_pylist() == from_arrow.to_pylist()
    assert from_arrow.select(names).to_pylist() == from_pandas[names].to_dict("records")


def test_training_sets_see_events_not_yet_archived(project):
    spine = pd.DataFrame({"user_id": ["b"], "timestamp": [NOW]})
    assert project.training_set(spine, ["spend_lifetime"])["spend_lifetime"][0] == 4.0
    project.ingest(
        "orders",
        [{"user_id": "b", "amount": 16.0, "status": "paid", "ts": NOW - timedelta(minutes=1)}],
    )
    assert project.training_set(spine, ["spend_lifetime"])["spend_lifetime"][0] == 20.0


def test_bad_spines_are_refused_with_the_reason(project):
    with pytest.raises(SpineError, match="no time column 'timestamp'"):
        project.training_set(pd.DataFrame({"user_id": ["a"], "when": [NOW]}), ["spend_1h"])
    with pytest.raises(SpineError, match="no column 'user_id', the key of entity 'user'"):
        project.training_set(pd.DataFrame({"uid": ["a"], "timestamp": [NOW]}), ["spend_1h"])
    with pytest.raises(SpineError, match="must hold timestamps"):
        project.training_set(pd.DataFrame({"user_id": ["a"], "timestamp": ["x"]}), ["spend_1h"])
    with pytest.raises(SpineError, match="pandas, polars or pyarrow"):
        project.training_set([("a", NOW)], ["spend_1h"])


def test_the_processor_can_run_continuously(small_project):
    with Project(small_project) as p:
        stop = threading.Event()
        worker = threading.Thread(target=p.process, kwargs={"forever": True, "stop": stop})
        worker.start()
        try:
            p.ingest(
                "orders", [{"user_id": "z", "amount": 5.0, "status": "paid", "ts": time.time() - 1}]
            )
            deadline = time.monotonic() + 10
            while p.online_features({"user_id": "z"}, ["spend_1h"])["spend_1h"] != 5.0:
                assert time.monotonic() < deadline, "the processor did not pick up the event"
                time.sleep(0.05)
        finally:
            stop.set()
            worker.join()


def test_events_later_than_the_stream_allows_are_dead_lettered(project_factory):
    from tests.conftest import SMALL_DEFINITIONS

    source = SMALL_DEFINITIONS.replace(
        'required=["amount"],', 'required=["amount"], allowed_lateness="2d",'
    )
    with Project(project_factory(source), clock=lambda: NOW) as p:
        result = p.ingest(
            "orders",
            [
                {"user_id": "a", "amount": 1.0, "ts": NOW - timedelta(days=1)},
                {"user_id": "a", "amount": 2.0, "ts": NOW - timedelta(days=3)},
            ],
        )
        assert result.accepted == 1
        assert "later than stream 'orders' allows (172800s)" in result.rejected[0].reason
        assert p.log.end_offset("_dead_letter") == 1
