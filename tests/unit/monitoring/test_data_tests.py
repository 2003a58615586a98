"""Continuous data tests: expectations on streams and features, every kind passing and
failing, checked on each processed batch (alerts with the owner, once a day) and on demand
(`headwater check`)."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from typer.testing import CliRunner

from headwater import DefinitionError, Expectation, Project
from headwater.cli import app
from tests.conftest import write_project
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

CASES = [
    (Expectation("x", min_value=0), [0, 1, None], [0, -1, 2]),
    (Expectation("x", max_value=10), [10, 3], [11, 3]),
    (Expectation("x", max_null_rate=0.5), [1, None], [None, None, 1]),
    (Expectation("x", one_of=["ios", "web"]), ["ios", "web", None], ["ios", "android"]),
    (Expectation("x", pattern=r"u\d+"), ["u1", "u22"], ["u1", "user-3"]),
]


@pytest.mark.parametrize(("expectation", "good", "bad"), CASES)
def test_every_kind_passes_and_fails(expectation, good, bad):
    assert expectation.violations(good) == []
    (violation,) = expectation.violations(bad)
    kind = next(k for k, v in expectation.spec().items() if k != "column")
    assert violation.check == kind and violation.of == len(bad) and violation.rows >= 1


CHECKED = DEFINITIONS.replace(
    'key="user_id", time="ts", owner="web", description="Visits")',
    'key="user_id", time="ts", owner="web", description="Visits", expectations=['
    'Expectation("device", one_of=["ios", "web"]), Expectation("user_id", pattern=r"u\\d+")])',
).replace(
    'windows=["1d", "7d", "30d"], owner="growth", description="Visits"),',
    'windows=["1d", "7d", "30d"], owner="growth", description="Visits", expectations=['
    'Expectation("visits_7d", max_value=1000), Expectation("visits_30d", max_value=5)]),',
)


@pytest.fixture
def project(tmp_path):
    assert CHECKED.count("Expectation(") > 4
    with Project(write_project(tmp_path / "p", CHECKED), clock=lambda: NOW) as p:
        yield p


def _alerts(p: Project) -> list[dict]:
    return [
        doc
        for r in p.log.read("alerts", 0, 10**6)
        if (doc := orjson.loads(r.payload)).get("kind") == "data_test"
    ]


def test_each_processed_batch_is_checked_and_failures_alert_once_a_day(project):
    p = project
    assert not p.ingest("visits", visits(users=60)).rejected
    p.process()
    (feature,) = _alerts(p)  # the stream's events pass; visits_30d over 5 does not
    assert feature["on"] == "feature" and feature["feature"] == "visits"
    assert feature["column"] == "visits_30d" and feature["check"] == "max_value"
    assert feature["owner"] == "growth" and feature["observed"] > 5
    bad = [
        {"user_id": "u1", "device": "android", "ts": NOW - timedelta(hours=2)},
        {"user_id": "x-9", "device": "web", "ts": NOW - timedelta(hours=1)},
    ]
    assert not p.ingest("visits", bad).rejected  # valid events: kept, and flagged
    p.process()
    found = {(a["on"], a["column"], a["check"]): a for a in _alerts(p)}
    assert set(found) == {
        ("feature", "visits_30d", "max_value"),
        ("stream", "device", "one_of"),
        ("stream", "user_id", "pattern"),
    }
    assert found[("stream", "device", "one_of")]["examples"] == ["android"]
    assert found[("stream", "device", "one_of")]["owner"] == "web"
    p.ingest("visits", [{**bad[0], "ts": NOW - timedelta(minutes=30)}])
    p.process()
    assert len(_alerts(p)) == 3  # the same failure the same day: no second alert
    assert p.processor.check_alerts.failures >= 5  # every failing batch counted


def test_headwater_check_runs_them_on_demand(project):
    p = project
    p.ingest("visits", visits(users=60))
    p.ingest("visits", [{"user_id": "u1", "device": "android", "ts": NOW - timedelta(hours=1)}])
    p.process()
    results = {(r.test.name, r.test.expectation.column): r for r in p.check()}
    assert not results[("visits", "device")].passed
    assert results[("visits", "user_id")].passed and results[("visits", "visits_7d")].passed
    assert not results[("visits", "visits_30d")].passed
    assert results[("visits", "visits_7d")].checked == 60  # the entities the events name
    folder = str(p.root)
    p.close()
    failed = CliRunner().invoke(app, ["check", "--stream", "visits", "-p", folder])
    assert failed.exit_code == 1 and "one_of broken by 1 (e.g. 'android')" in failed.output
    assert "1 of 2 expectations hold" in failed.output
    only = CliRunner().invoke(app, ["check", "--feature", "visits", "-p", folder])
    # the CLI's values are at the real now, months after the events: every window is empty
    assert only.exit_code == 0 and "2 of 2 expectations hold" in only.output
    assert "visits_7d" in only.output and "device" not in only.output
    unknown = CliRunner().invoke(app, ["check", "--stream", "visit", "-p", folder])
    assert unknown.exit_code != 0 and "did you mean" in str(unknown.exception)


def test_expectations_name_real_columns():
    from headwater import Entity, Feature, Stream, agg

    with pytest.raises(DefinitionError, match="has no field 'devise'"):
        Stream("s", fields={"user_id": "string", "device": "string"}, key="user_id", time="ts",
               owner="g", description="s",
               expectations=[Expectation("devise", one_of=["a"])])  # fmt: skip
    s = Stream("s", fields={"user_id": "string"}, key="user_id", time="ts", owner="g",
               description="s")  # fmt: skip
    user = Entity("user", keys="user_id", owner="g", description="u")
    with pytest.raises(DefinitionError, match="on one of its outputs"):
        Feature("n", entity=user, stream=s, aggregation=agg.count(), windows=["7d"], owner="g",
                description="n", expectations=[Expectation("n_30d", max_value=1)])  # fmt: skip
    with pytest.raises(DefinitionError, match="checks nothing"):
        Expectation("x")
    with pytest.raises(DefinitionError, match="not a regular expression"):
        Expectation("x", pattern="(")
