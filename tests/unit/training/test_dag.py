"""Training as a DAG: steps of your own, parallel steps, resume from the cache, a
hyperparameter search with its trials as child runs, and evaluation by segment."""

from __future__ import annotations

import json
import re

import pytest

from headwater import Project
from headwater.errors import DefinitionError
from headwater.registry.registry import PromotionRefused
from headwater.training.pipeline import StepFailed
from tests.conftest import tiny_model, write_project
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

STEPS = (
    DEFINITIONS
    + '''
import threading
from headwater import Choice, Float, Int, PromotionPolicy, Search, Segment, step

BARRIER = threading.Barrier(2, timeout=20)
FAIL = {"times": 0}
SEEN = {}


@step(outputs="features")
def busiest_two(train, features):
    """Keep the two features that vary most on the training rows."""
    SEEN["train_rows"] = len(train)
    return sorted(features, key=lambda f: -train[f].var())[:2]


@step(outputs="left")
def wait_left(train):
    BARRIER.wait()
    return len(train)


@step(outputs="right")
def wait_right(train):
    BARRIER.wait()
    return len(train)


@step(outputs="checked", retries=0)
def sometimes_fails(train, left, right):
    FAIL["times"] -= 1
    if FAIL["times"] >= 0:
        raise RuntimeError("the user step broke")
    return left + right


@step(outputs=("features", "note"))
def outsider(features):
    return ["visits_1d", "not_a_feature"], "x"


common = dict(label=churned, features=NUMERIC, lookback="14d", min_rows=50, owner="growth",
              description="steps")
models += [
    Model("churn_select", estimator=logistic, steps=[busiest_two], **common),
    Model("churn_parallel", estimator=logistic, steps=[wait_left, wait_right], parallel=2,
          **common),
    Model("churn_serial", estimator=logistic, steps=[wait_left, wait_right], parallel=1,
          **common),
    Model("churn_resume", estimator=logistic, steps=[wait_left, wait_right, sometimes_fails],
          **common),
    Model("churn_outsider", estimator=logistic, steps=[outsider], **common),
    Model("churn_search", estimator=lightgbm,
          search=Search(space={"num_leaves": Int(4, 16),
                               "learning_rate": Float(0.05, 0.3, log=True),
                               "min_child_samples": Choice([5, 20])}, trials=4),
          **common),
    Model("churn_segments", estimator=logistic, segments=["device_lifetime",
          Segment("visits_30d", bins=(5, 15), min_rows=10)], **common),
    Model("churn_fair", estimator=logistic, segments=["device_lifetime"],
          promotion=PromotionPolicy(metric="auc", max_segment_gap=0.0), **common),
]
'''
)


@pytest.fixture
def project(tmp_path):
    folder = write_project(tmp_path / "steps", STEPS)
    with Project(folder, clock=lambda: NOW) as p:
        assert not p.ingest("visits", visits()).rejected
        yield p


def _globals(p: Project) -> dict:
    return p.model("churn_select").steps[0].fn.__globals__


def test_a_user_step_replaces_the_features_the_fit_and_serving_use(project):
    result = project.train("churn_select")
    doc = project.registry.version("churn_select", result.version)
    chosen = doc["signature"]["features"]
    assert len(chosen) == 2 and set(chosen) < {"visits_1d", "visits_7d", "visits_30d"}
    assert set(doc["profile"]["features"]) == set(chosen)
    assert set(doc["importance"]) == set(chosen)
    assert _globals(project)["SEEN"]["train_rows"] == doc["rows"]["train"]
    dag = {d["name"]: d for d in result.run["dag"]}
    assert dag["busiest_two"]["inputs"] == {"train": "train_rows.train",
                                            "features": "model.features"}  # fmt: skip
    assert dag["fit"]["inputs"]["features"] == "busiest_two.features"
    assert not dag["busiest_two"]["builtin"] and dag["fit"]["builtin"]
    assert doc["lineage"]["steps"] == ["busiest_two"]


def test_independent_steps_run_in_parallel(project):
    """Each of the two steps waits at a barrier for the other: they finish only if both run
    at once. With parallel=1 the barrier times out and the run fails."""
    result = project.train("churn_parallel")
    starts = {s["name"]: s for s in result.run["steps"]}
    assert starts["wait_left"]["status"] == starts["wait_right"]["status"] == "done"
    barrier = _globals(project)["BARRIER"]
    barrier.reset()
    barrier._timeout = 1.0  # the serial run need not wait 20 s to show it cannot pass
    with pytest.raises(StepFailed, match="BrokenBarrierError"):
        project.train("churn_serial")


def test_a_failing_user_step_resumes_from_the_cache(project):
    g = _globals(project)
    g["FAIL"]["times"] = 1
    lines: list[str] = []
    with pytest.raises(StepFailed, match="step 'sometimes_fails' failed: RuntimeError"):
        project.train("churn_resume", log=lines.append)
    failed = project.registry.runs("churn_resume")[-1]
    status = {s["name"]: s["status"] for s in failed["steps"]}
    assert status["sometimes_fails"] == "failed" and status["wait_left"] == "done"
    assert project.registry.versions("churn_resume") == []
    lines.clear()
    result = project.train("churn_resume", log=lines.append)
    status = {line.split()[0]: line.split()[1] for line in lines}
    assert status["training_set"] == status["wait_left"] == status["wait_right"] == "cached"
    assert status["sometimes_fails"] == "done" and result.version == 1


def test_a_step_returning_a_wrong_output_fails_clearly(project):
    with pytest.raises(StepFailed, match="not_a_feature.*not features of model"):
        project.train("churn_outsider")


def test_steps_that_wait_for_each_other_or_read_nothing_known_are_refused():
    from headwater import step

    @step(outputs="features")
    def by_importance(fitted, features):
        return features

    @step(outputs="x")
    def reads_typo(trian):
        return 1

    def model(*steps):
        return tiny_model(steps=steps)

    with pytest.raises(DefinitionError, match="wait for each other"):
        model(by_importance)
    with pytest.raises(DefinitionError, match="reads 'trian', which no step makes"):
        model(reads_typo)
    with pytest.raises(DefinitionError, match="cannot be replaced"):
        step(outputs="dataset", name="x")(lambda train: train)


def test_a_search_tracks_every_trial_and_registers_the_best(project):
    result = project.train("churn_search")
    doc = project.registry.version("churn_search", result.version)
    search = doc["lineage"]["search"]
    assert search["trials"] == 4 and search["metric"] == "auc" and search["failed"] == 0
    trials = [r for r in project.registry.runs("churn_search") if r.get("kind") == "trial"]
    assert sorted(t["id"] for t in trials) == sorted(search["runs"])
    assert {t["parent"] for t in trials} == {result.run["id"]}
    assert all(set(t["params"]) == {"num_leaves", "learning_rate", "min_child_samples"}
               for t in trials)  # fmt: skip
    best = max(trials, key=lambda t: t["metrics"]["auc"])
    assert search["best"]["run"] == best["id"]
    for name, value in best["params"].items():  # the registered model was fitted with them
        assert doc["params"][name] == value
    # the search never saw the held-out rows: it validated before the test split
    assert search["validation"]["from_us"] < doc["lineage"]["snapshot"]["test_from_us"]


def test_evaluation_by_segment_and_the_gap_policy(project):
    doc = project.registry.version("churn_segments", project.train("churn_segments").version)
    device = doc["segments"]["device_lifetime"]
    assert set(device["groups"]) == {"ios", "web"}
    assert sum(g["rows"] for g in device["groups"].values()) == doc["rows"]["test"]
    for g in device["groups"].values():
        assert 0 <= g["positive_rate"] <= 1 and 0 < g["predicted_rate"] < 1
        assert g["calibration"] == pytest.approx(g["predicted_rate"] - g["positive_rate"])
    aucs = [g["auc"] for g in device["groups"].values()]
    assert device["gap"]["value"] == pytest.approx(max(aucs) - min(aucs))
    assert set(doc["segments"]["visits_30d"]["groups"]) <= {"< 5", "[5, 15)", ">= 15"}
    fair = project.train("churn_fair").version
    with pytest.raises(PromotionRefused, match="between groups .* of segment 'device_lifetime'"):
        project.promote("churn_fair", fair, reason="gap")


def test_a_pii_field_cannot_segment(tmp_path):
    source = (
        DEFINITIONS.replace(
            'fields={"user_id": "string", "device": "string", "ts": "timestamp"},',
            'fields={"user_id": "string", "device": "string", "email": "string", '
            '"ts": "timestamp"}, pii=["email"],',
        )
        + """
from headwater import Segment
models.append(Model("churn_pii", label=churned, features=NUMERIC, estimator=logistic,
                    segments=["email"], owner="growth", description="no"))
"""
    )
    folder = write_project(tmp_path / "pii", source)
    with pytest.raises(DefinitionError, match="segment 'email' would print PII"):
        Project(folder, clock=lambda: NOW).close()


def test_the_cli_prints_the_dag_the_trials_and_the_segments(project):
    from typer.testing import CliRunner

    from headwater.cli import app

    searched = project.train("churn_search")
    selected = project.train("churn_select")
    segmented = project.train("churn_segments")
    folder = str(project.root)

    def cli(*args: str) -> str:
        out = CliRunner().invoke(app, [*args, "-p", folder], catch_exceptions=False)
        assert out.exit_code == 0, out.output
        return out.output

    shown = cli("runs", "show", selected.run["id"])
    assert re.search(r"busiest_two\s+│ yours", shown)
    record = json.loads(cli("runs", "show", selected.run["id"], "--json"))
    assert {d["name"]: d for d in record["dag"]}["fit"]["inputs"]["features"] == (
        "busiest_two.features"
    )
    shown = cli("runs", "show", searched.run["id"])
    assert "search: 4 trials" in shown and "(best)" in shown
    compared = cli("runs", "--compare", searched.run["id"])
    assert compared.count("0.") >= 4 and "num_leaves" in compared
    listed = cli("runs", "churn_search")
    assert "4 search trials not shown" in listed
    assert cli("runs", "churn_search", "--trials").count("churn_search │ trial") == 4
    shown = cli("models", "show", "churn_segments", str(segmented.version))
    assert "segment device_lifetime" in shown and "largest gap in auc" in shown
    missing = CliRunner().invoke(app, ["runs", "show", "nope", "-p", folder])
    assert missing.exit_code != 0 and "no run 'nope'" in str(missing.exception)


def test_the_ui_shows_the_run_s_dag_its_timeline_the_search_and_segments(project):
    from fastapi.testclient import TestClient

    project.train("churn_search")
    project.train("churn_segments")
    project.train("churn_parallel")
    client = TestClient(project.app(), base_url="http://127.0.0.1")
    searched = client.get("/ui/models/churn_search").text
    assert "Search: 4 trials by auc" in searched and 'class="timeline"' in searched
    assert "train ← train_rows" in searched  # what each step read
    segmented = client.get("/ui/models/churn_segments").text
    assert "Largest gap in auc" in segmented and "device_lifetime" in segmented
    parallel = client.get("/ui/models/churn_parallel").text
    assert parallel.count("<td>yours</td>") == 2


def test_a_gap_policy_without_segments_is_refused(tmp_path):
    source = (
        DEFINITIONS
        + """
models.append(Model("unfair", label=churned, features=NUMERIC, estimator=logistic,
                    promotion=PromotionPolicy(max_segment_gap=0.1), owner="growth",
                    description="no segments"))
"""
    )
    folder = write_project(tmp_path / "gap", source)
    with pytest.raises(DefinitionError, match="neither the model nor a service of it"):
        Project(folder, clock=lambda: NOW).close()


def test_a_search_stops_at_its_timeout(tmp_path):
    source = (
        DEFINITIONS
        + """
from headwater import Int, Search

models.append(Model("timed", label=churned, features=NUMERIC, estimator=lightgbm, lookback="14d",
                    min_rows=50, search=Search(space={"num_leaves": Int(4, 16)}, trials=1000,
                                               timeout="1s"),
                    owner="growth", description="a search bounded by time"))
"""
    )
    folder = write_project(tmp_path / "timed", source)
    with Project(folder, clock=lambda: NOW) as p:
        p.ingest("visits", visits())
        run = p.train("timed").run
    search = run["search"]
    assert search["stopped_by"] == "timeout" and 1 <= search["trials"] < 1000
    (step,) = [s for s in run["steps"] if s["name"] == "search"]
    assert step["seconds"] < 5  # one trial may finish after the second has passed
