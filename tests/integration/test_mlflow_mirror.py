"""Mirroring a trained version to a real local MLflow store (SQLite tracking and registry).

mlflow must be installed (the ``mlflow`` extra); a missing package fails these tests, never skips.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import joblib
import mlflow
import mlflow.artifacts
import pandas as pd
import pytest

from headwater import Project
from headwater.errors import HeadwaterError
from headwater.registry.mlflow_mirror import mirror
from tests.conftest import write_project

pytestmark = pytest.mark.filterwarnings(
    # mlflow's SQLAlchemy store still uses noload(), deprecated in SQLAlchemy 2.1; not ours to fix
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)

NOW = datetime(2026, 3, 1, tzinfo=UTC)

DEFINITIONS = """
from headwater import Entity, Feature, Int, Label, Model, Search, Stream, agg

user = Entity("user", keys="user_id", owner="growth", description="A user")
visits = Stream("visits", fields={"user_id": "string", "device": "string", "ts": "timestamp"},
                key="user_id", time="ts", owner="web", description="Visits")
features = [
    Feature("visits", entity=user, stream=visits, aggregation=agg.count(),
            windows=["1d", "7d", "30d"], owner="growth", description="Visits"),
]
churned = Label("churned_7d", entity=user, stream=visits, aggregation=agg.count(),
                horizon="7d", transform=lambda n: n == 0, owner="growth",
                description="No visit in the next 7 days")


def logistic():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))


def lightgbm():
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_estimators=20, random_state=1, deterministic=True, n_jobs=1,
                          verbose=-1)


NUMERIC = ["visits_1d", "visits_7d", "visits_30d"]
models = [
    Model("churn", label=churned, features=NUMERIC, estimator=logistic, lookback="14d",
          min_rows=50, owner="growth", description="Churn"),
    Model("churn_gbm", label=churned, features=NUMERIC, estimator=lightgbm, lookback="14d",
          min_rows=50, owner="growth", description="Churn, boosted"),
    Model("churn_search", label=churned, features=NUMERIC, estimator=lightgbm, lookback="14d",
          min_rows=50, search=Search(space={"num_leaves": Int(4, 12)}, trials=3),
          owner="growth", description="Churn, tuned"),
]
"""

ROWS = pd.DataFrame(
    {
        "visits_1d": [0.0, 1.0, 4.0, 0.0],
        "visits_7d": [0.0, 5.0, 20.0, 1.0],
        "visits_30d": [3.0, 20.0, 70.0, 9.0],
    }
)


def visits(users: int = 150, days: int = 40, seed: int = 3) -> list[dict[str, Any]]:
    """Users visit at their own rate; some fade out, then churn (stop visiting)."""
    rnd = random.Random(seed)
    start = NOW - timedelta(days=days)
    events = []
    for u in range(users):
        rate = rnd.uniform(0.3, 3.0)
        churn_day = rnd.uniform(5, days * 1.5)
        day = 0.0
        while day < min(days, churn_day):
            fade = 0.25 if churn_day - day < 7 else 1.0
            day += rnd.expovariate(rate * fade)
            if day < min(days, churn_day):
                ts = start + timedelta(days=day)
                events.append({"user_id": f"u{u}", "device": rnd.choice(["ios", "web"]), "ts": ts})
    return events


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """A project with version 1 of "churn" (scikit-learn) and of "churn_gbm" (LightGBM)."""
    folder = write_project(tmp_path_factory.mktemp("mirror") / "churn", DEFINITIONS)
    with Project(folder, clock=lambda: NOW) as p:
        assert not p.ingest("visits", visits()).rejected
        p.train("churn")
        p.train("churn_gbm")
        yield p


@dataclass
class Tracking:
    """A fresh MLflow store whose artifacts stay in the test's folder."""

    uri: str
    artifacts: Path
    client: mlflow.MlflowClient

    def experiment(self, name: str) -> str:
        location = (self.artifacts / name.replace("/", "_")).as_uri()
        return str(self.client.create_experiment(name, artifact_location=location))


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow database with its tables made, to copy: migrating a new one takes seconds."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{path}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments()
    client.search_registered_models()
    return path


@pytest.fixture
def tracking(tmp_path: Path, empty_store: Path) -> Tracking:
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    return Tracking(uri, tmp_path / "artifacts", client)


def version_and_run(p: Project, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return p.registry.version(model, 1), p.registry.runs(model)[-1]


def test_the_run_carries_params_metrics_times_and_lineage(project: Project, tracking: Tracking):
    experiment_id = tracking.experiment("headwater/churn")
    doc, run = version_and_run(project, "churn")

    ids = mirror(tracking.uri, run, doc, read=project.registry.read_artifact)

    assert ids["experiment_id"] == experiment_id  # the default experiment name
    fresh = mlflow.MlflowClient(tracking_uri=tracking.uri, registry_uri=tracking.uri)
    got = fresh.get_run(ids["run_id"])
    assert got.info.run_name == "churn-v1"
    assert got.info.status == "FINISHED"
    assert (got.info.start_time, got.info.end_time) == (
        run["started_us"] // 1000,
        run["ended_us"] // 1000,
    )
    assert doc["params"]
    assert got.data.params == {
        k: v if isinstance(v, str) else str(v) for k, v in doc["params"].items()
    }
    assert {"auc", "log_loss"} <= doc["metrics"].keys()
    for name, value in doc["metrics"].items():
        assert got.data.metrics[name] == value
    for step in run["steps"]:
        assert got.data.metrics[f"step.{step['name']}.seconds"] == step["seconds"]
    tags = got.data.tags
    lineage = doc["lineage"]
    assert tags["headwater.run_id"] == run["id"] == doc["run"]
    assert tags["headwater.version"] == "1"
    assert tags["headwater.data_hash"] == lineage["snapshot"]["data_hash"] == run["data_hash"]
    assert json.loads(tags["headwater.features"]) == lineage["features"]
    assert set(lineage["features"]) == {"visits_1d", "visits_7d", "visits_30d"}
    assert json.loads(tags["headwater.snapshot.offsets"]) == lineage["snapshot"]["log"]["offsets"]
    assert json.loads(tags["headwater.label"]) == lineage["label"]
    assert tags["headwater.definition_version"] == str(lineage["definition_version"])
    assert tags["headwater.rows"] == str(lineage["snapshot"]["rows"])
    if lineage["code"].get("git_commit"):
        assert tags["mlflow.source.git.commit"] == lineage["code"]["git_commit"]


def test_the_model_file_downloads_and_predicts_like_headwaters(
    project: Project, tracking: Tracking, tmp_path: Path
):
    tracking.experiment("headwater/churn")
    doc, run = version_and_run(project, "churn")

    ids = mirror(tracking.uri, run, doc, read=project.registry.read_artifact)

    fresh = mlflow.MlflowClient(tracking_uri=tracking.uri, registry_uri=tracking.uri)
    listed = {f.path for f in fresh.list_artifacts(ids["run_id"], "model")}
    assert listed == {"model/model.joblib", "model/signature.json"}
    local = mlflow.artifacts.download_artifacts(
        run_id=ids["run_id"],
        artifact_path="model/model.joblib",
        dst_path=str(tmp_path / "download"),
        tracking_uri=tracking.uri,
    )
    ours, signature = project.registry.load_model(doc)
    theirs = joblib.load(local)
    X = signature.matrix(ROWS)
    assert theirs.predict_proba(X)[:, 1].tolist() == ours.predict_proba(X)[:, 1].tolist()


def test_the_registered_model_has_the_version_and_its_alias(project: Project, tracking: Tracking):
    tracking.experiment("headwater/churn")
    doc, run = version_and_run(project, "churn")

    ids = mirror(tracking.uri, run, doc, read=project.registry.read_artifact)

    fresh = mlflow.MlflowClient(tracking_uri=tracking.uri, registry_uri=tracking.uri)
    assert ids["model_version"] == "1"
    registered = fresh.get_registered_model("churn")
    # the SQL store gives version numbers as int, a tracking server as str
    assert {k: str(v) for k, v in registered.aliases.items()} == {"headwater-v1": "1"}
    by_alias = fresh.get_model_version_by_alias("churn", "headwater-v1")
    assert str(by_alias.version) == "1"
    assert by_alias.run_id == ids["run_id"]
    assert by_alias.tags["headwater.version"] == "1"
    assert by_alias.source == f"{fresh.get_run(ids['run_id']).info.artifact_uri}/model"


def test_mirroring_again_returns_the_same_ids_and_creates_nothing(
    project: Project, tracking: Tracking
):
    experiment_id = tracking.experiment("headwater/churn")
    doc, run = version_and_run(project, "churn")

    first = mirror(tracking.uri, run, doc, read=project.registry.read_artifact)
    second = mirror(tracking.uri, run, doc, read=project.registry.read_artifact)

    assert second == first
    fresh = mlflow.MlflowClient(tracking_uri=tracking.uri, registry_uri=tracking.uri)
    assert [r.info.run_id for r in fresh.search_runs([experiment_id])] == [first["run_id"]]
    assert [str(v.version) for v in fresh.search_model_versions("name = 'churn'")] == ["1"]


def test_a_mirror_that_stopped_midway_is_written_again(project: Project, tracking: Tracking):
    experiment_id = tracking.experiment("headwater/churn")
    doc, run = version_and_run(project, "churn")
    half = tracking.client.create_run(experiment_id, tags={"headwater.run_id": run["id"]})

    ids = mirror(tracking.uri, run, doc, read=project.registry.read_artifact)

    assert ids["run_id"] != half.info.run_id
    fresh = mlflow.MlflowClient(tracking_uri=tracking.uri, registry_uri=tracking.uri)
    assert [r.info.run_id for r in fresh.search_runs([experiment_id])] == [ids["run_id"]]
    assert fresh.get_run(ids["run_id"]).data.metrics["auc"] == doc["metrics"]["auc"]


def test_lightgbm_versions_carry_the_native_model_file(project: Project, tracking: Tracking):
    experiment_id = tracking.experiment("team/churn-gbm")
    doc, run = version_and_run(project, "churn_gbm")

    ids = mirror(
        tracking.uri, run, doc, experiment="team/churn-gbm", read=project.registry.read_artifact
    )

    assert ids["experiment_id"] == experiment_id
    fresh = mlflow.MlflowClient(tracking_uri=tracking.uri, registry_uri=tracking.uri)
    listed = {f.path for f in fresh.list_artifacts(ids["run_id"], "model")}
    assert listed == {"model/model.joblib", "model/signature.json", "model/model.txt"}
    assert fresh.get_model_version_by_alias("churn_gbm", "headwater-v1").run_id == ids["run_id"]


def test_a_missing_experiment_is_created(
    project: Project, empty_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # MLflow's default artifact root is ./mlruns, resolved when a client first opens the store
    monkeypatch.chdir(tmp_path)
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    doc, run = version_and_run(project, "churn")

    ids = mirror(uri, run, doc, read=project.registry.read_artifact)

    fresh = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert fresh.get_experiment(ids["experiment_id"]).name == "headwater/churn"
    assert (tmp_path / "mlruns").is_dir()


def test_a_run_that_did_not_train_the_version_is_refused(project: Project, tmp_path: Path):
    doc, _ = version_and_run(project, "churn")
    _, other = version_and_run(project, "churn_gbm")

    with pytest.raises(HeadwaterError, match="did not train version 1"):
        mirror(f"sqlite:///{tmp_path}/mlflow.db", other, doc, read=project.registry.read_artifact)
    assert not (tmp_path / "mlflow.db").exists()


def test_without_mlflow_the_error_names_the_extra(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets when missing
    doc, run = version_and_run(project, "churn")

    with pytest.raises(HeadwaterError, match=r"pip install 'headwater\[mlflow\]'"):
        mirror(f"sqlite:///{tmp_path}/mlflow.db", run, doc, read=project.registry.read_artifact)


def test_search_trials_are_mirrored_as_child_runs(project: Project, tracking: Tracking):
    experiment_id = tracking.experiment("headwater/churn_search")
    result = project.train("churn_search")
    doc = project.registry.version("churn_search", result.version)
    trials = [project.registry.run(i) for i in result.run["search"]["runs"]]
    ids = mirror(tracking.uri, result.run, doc, read=project.registry.read_artifact,
                 trials=trials)  # fmt: skip
    children = tracking.client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{ids['run_id']}'"
    )
    assert len(children) == 3
    by_trial = {c.data.tags["headwater.run_id"]: c for c in children}
    for t in trials:
        child = by_trial[t["id"]]
        assert child.data.params["num_leaves"] == str(t["params"]["num_leaves"])
        assert child.data.metrics["auc"] == pytest.approx(t["metrics"]["auc"])
    again = mirror(tracking.uri, result.run, doc, read=project.registry.read_artifact,
                   trials=trials)  # fmt: skip
    assert again == ids
    assert len(tracking.client.search_runs([experiment_id])) == 4  # nothing copied twice
