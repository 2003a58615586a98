"""Scheduled batch scoring: a service's entities scored at each cron fire time, once."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from headwater import Project
from headwater.definitions import DefinitionError
from headwater.project.scheduler import due_scoring, run_due_scoring
from tests.conftest import write_project
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

SCHEDULED = (
    DEFINITIONS
    + """
from headwater import Service

services = [
    Service("nightly", model=models[0], batch_schedule="0 3 * * *",
            batch_output="out/{service}-{date}.csv", owner="growth", description="Nightly"),
    Service("adhoc", model=models[0], owner="growth", description="Not scheduled"),
]
"""
)


def test_a_due_service_is_scored_once_per_fire_time(tmp_path):
    clock = {"t": NOW + timedelta(hours=4)}  # 03:00 has passed today
    folder = write_project(tmp_path / "p", SCHEDULED)
    with Project(folder, clock=lambda: clock["t"]) as p:
        p.ingest("visits", visits())
        p.process()
        p.promote("churn", p.train("churn").version)
        logged_before = p.log.end_offset("predictions")
        assert due_scoring(p) == ["nightly"]
        lines: list[str] = []
        (outcome,) = run_due_scoring(p, lines.append)
        name, rows = outcome
        entities = p.entities("user")
        assert name == "nightly" and rows == len(entities) > 100
        (written,) = (folder / "out").glob("nightly-*.csv")
        scores = pd.read_csv(written)
        assert len(scores) == rows and scores["score"].between(0, 1).all()
        assert set(scores["user_id"]) == set(entities["user_id"])
        p.serving.logger.flush()
        assert p.log.end_offset("predictions") == logged_before + rows  # every one logged

        assert due_scoring(p) == []  # done for this fire time, also after a restart
        clock["t"] = NOW + timedelta(days=1, hours=2)
        assert due_scoring(p) == []  # tomorrow's 03:00 has not come yet
        clock["t"] = NOW + timedelta(days=1, hours=3, minutes=1)
        assert due_scoring(p) == ["nightly"]


def test_batch_output_must_be_a_table_file():
    from headwater import Entity, Label, Model, Service, Stream, agg

    user = Entity("user", keys="user_id", owner="g", description="u")
    s = Stream(
        "s",
        fields={"user_id": "string", "ts": "timestamp"},
        key="user_id",
        time="ts",
        owner="g",
        description="s",
    )
    label = Label(
        "l",
        entity=user,
        stream=s,
        aggregation=agg.count(),
        horizon="1d",
        owner="g",
        description="l",
    )
    model = Model(
        "m", label=label, features=["x"], estimator=lambda: None, owner="g", description="m"
    )
    with pytest.raises(DefinitionError, match="must end in .parquet or .csv"):
        Service(
            "x",
            model=model,
            batch_schedule="0 3 * * *",
            batch_output="out/{service}.txt",
            owner="g",
            description="x",
        )
