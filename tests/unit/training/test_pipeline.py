"""The pipeline: steps logged, clear failures, retries, resume, nothing half-registered."""

from __future__ import annotations

import pytest

from headwater import Project
from headwater.registry.registry import PromotionRefused, RegistryError
from headwater.training.pipeline import StepFailed
from tests.unit.training.conftest import NOW

STEPS = ["training_set", "validate", "split", "train_rows", "test_rows", "fit", "evaluate",
         "profile", "register"]  # fmt: skip
CACHED = {"training_set", "validate", "split", "fit", "evaluate", "profile"}


def test_train_registers_a_version_with_lineage_metrics_and_profile(churn_project):
    p = churn_project
    lines: list[str] = []
    result = p.train("churn", log=lines.append)
    names = [line.split()[0] for line in lines]
    assert sorted(names) == sorted(STEPS)
    assert names[0] == "training_set" and names[-1] == "register"  # the rest: as ready
    doc = p.registry.version("churn", result.version)
    assert result.version == 1
    assert 0.75 < doc["metrics"]["auc"] <= 1.0
    assert set(doc["metrics"]) >= {"auc", "log_loss", "precision_at_k", "recall_at_k", "brier"}
    assert doc["comparison"]["baseline"]["metrics"]["auc"] > 0.5
    lineage = doc["lineage"]
    assert lineage["features"] == {
        f"visits_{w}": p.definitions.features["visits"].version for w in ("1d", "7d", "30d")
    }
    assert lineage["label"] == {
        "name": "churned_7d",
        "version": p.definitions.labels["churned_7d"].version,
    }
    assert lineage["snapshot"]["log"]["offsets"] == {"visits": p.log.end_offset("visits")}
    assert lineage["snapshot"]["rows"] == doc["rows"]["train"] + doc["rows"]["test"]
    assert lineage["packages"]["scikit-learn"]
    assert set(doc["profile"]["features"]) == {"visits_1d", "visits_7d", "visits_30d"}
    assert doc["profile"]["prediction"]["type"] == "numeric"
    assert set(doc["importance"]) == {"visits_1d", "visits_7d", "visits_30d"}
    run = p.registry.runs("churn")[-1]
    assert run["status"] == "succeeded" and run["version"] == 1
    assert sorted(s["name"] for s in run["steps"]) == sorted(STEPS)
    assert {d["name"]: d["inputs"] for d in run["dag"]}["fit"] == {
        "train": "train_rows.train", "features": "model.features",
        "estimator": "model.estimator", "params": "model.params",
    }  # fmt: skip


def test_a_rerun_with_identical_inputs_reuses_every_finished_step(churn_project):
    p = churn_project
    p.train("churn")
    lines: list[str] = []
    p.train("churn", log=lines.append)
    statuses = {line.split()[0]: line.split()[1] for line in lines}
    assert {n for n, s in statuses.items() if s == "cached"} == CACHED
    assert statuses["register"] == "done"


def test_a_failing_fit_fails_the_run_clearly_and_resumes(churn_project):
    p = churn_project
    fail_fit = p.model("churn_flaky").estimator.__globals__["FAIL_FIT"]
    fail_fit["times"] = 2  # both attempts (retries=1) fail
    lines: list[str] = []
    with pytest.raises(StepFailed, match="step 'fit' failed: RuntimeError: the fit blew up") as e:
        p.train("churn_flaky", log=lines.append)
    assert "run `headwater train churn_flaky` again" in str(e.value)
    assert sum("attempt" in line for line in lines) == 2
    assert p.registry.versions("churn_flaky") == []  # nothing registered half-way
    failed = p.registry.runs("churn_flaky")[-1]
    assert failed["status"] == "failed" and "fit" in failed["error"]

    fail_fit["times"] = 1  # the retry succeeds this time
    lines.clear()
    result = p.train("churn_flaky", log=lines.append)
    statuses = {line.split()[0]: line.split()[1] for line in lines if "attempt" not in line}
    assert statuses["training_set"] == "cached" and statuses["fit"] == "done"
    assert result.version == 1


def test_promotion_is_gated_by_policy_and_can_be_rolled_back(churn_project):
    p = churn_project
    first = p.train("churn").version
    p.promote("churn", first, reason="first model")
    assert p.registry.alias("churn", "champion") == first
    p.ingest(
        "visits",
        [
            {
                "user_id": "u-new",
                "device": "ios",
                "ts": NOW - __import__("datetime").timedelta(days=20),
            }
        ],
    )
    second = p.train("churn").version
    doc = p.registry.version("churn", second)
    assert doc["comparison"]["champion"]["version"] == first
    p.promote("churn", second, by="alice", reason="better")
    assert p.registry.rollback("churn", "champion", "bob", "oops", 0) == first
    history = p.registry.aliases("churn")["champion"]["history"]
    assert [(h["action"], h["version"], h["by"]) for h in history] == [
        ("promote", first, "sdk"),
        ("promote", second, "alice"),
        ("rollback", first, "bob"),
    ]
    strict = p.train("churn_strict").version
    with pytest.raises(PromotionRefused, match="below the policy's minimum 0.99"):
        p.promote("churn_strict", strict)
    p.promote("churn_strict", strict, force=True, reason="override")
    with pytest.raises(RegistryError, match="has no version 9"):
        p.promote("churn", 9)


def test_reproduce_rebuilds_the_same_data_hash_after_more_events(churn_project):
    p = churn_project
    first = p.train("churn").version
    p.ingest(
        "visits",
        [
            {
                "user_id": f"u{i}",
                "device": "web",
                "ts": NOW - __import__("datetime").timedelta(days=9),
            }
            for i in range(40)
        ],
    )
    again = p.train("churn", reproduce=first).version
    a, b = (p.registry.version("churn", v) for v in (first, again))
    assert a["lineage"]["snapshot"]["data_hash"] == b["lineage"]["snapshot"]["data_hash"]
    assert a["metrics"] == b["metrics"]  # a deterministic fit gives the same model
    fresh = p.train("churn").version
    assert (
        p.registry.version("churn", fresh)["lineage"]["snapshot"]["data_hash"]
        != a["lineage"]["snapshot"]["data_hash"]
    )


def test_string_features_become_categories(churn_project):
    result = churn_project.train("churn_device")
    doc = churn_project.registry.version("churn_device", result.version)
    assert doc["signature"]["categories"] == {"device_lifetime": ["ios", "web"]}


def test_bad_models_fail_clearly(project_factory):
    from headwater import DefinitionError
    from tests.unit.training.conftest import DEFINITIONS

    with pytest.raises(DefinitionError, match="unknown feature 'visits_2d'"):
        Project(
            project_factory(DEFINITIONS.replace('NUMERIC = ["visits_1d"', 'NUMERIC = ["visits_2d"'))
        )
    with Project(project_factory(DEFINITIONS), clock=lambda: NOW) as empty:
        with pytest.raises(StepFailed, match="has no training examples"):
            empty.train("churn")
        with pytest.raises(DefinitionError, match="unknown model 'chrn'; did you mean 'churn'"):
            empty.train("chrn")


def test_the_scheduler_trains_models_whose_cron_time_came(project_factory):
    from datetime import timedelta

    from headwater.project.scheduler import due_models, run_due
    from tests.unit.training.conftest import DEFINITIONS, visits

    source = DEFINITIONS.replace(
        'baseline=lambda df: -df["visits_7d"], min_rows=50,',
        'baseline=lambda df: -df["visits_7d"], min_rows=50, schedule="0 3 * * *",',
    )
    now = {"t": NOW + timedelta(hours=4)}
    with Project(project_factory(source), clock=lambda: now["t"]) as p:
        p.ingest("visits", visits())
        assert due_models(p) == ["churn"]
        assert run_due(p, lambda _: None) == [("churn", 1)]
        assert due_models(p) == []
        now["t"] += timedelta(hours=22)  # 02:00 the next day: not yet
        assert due_models(p) == []
        now["t"] += timedelta(hours=2)  # 04:00: the 03:00 run is due
        assert due_models(p) == ["churn"]


def test_lightgbm_versions_explain_each_prediction(churn_project):
    import numpy as np
    import pandas as pd

    p = churn_project
    version = p.train("churn_device").version
    spine = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "timestamp": [NOW] * 3})
    explained = p.explain("churn_device", spine, version=version)
    columns = [c for c in explained.columns if c.startswith("contribution.")]
    assert columns == [
        f"contribution.{f}" for f in ["visits_1d", "visits_7d", "visits_30d", "device_lifetime"]
    ]
    assert np.isfinite(explained[columns].to_numpy()).all()
    assert explained["score"].between(0, 1).all()


def test_a_label_on_a_stream_without_the_entity_key_is_refused():
    from headwater import DefinitionError, Entity, Label, Stream, agg

    user = Entity("user", keys="user_id", owner="o", description="d")
    anonymous = Stream(
        "pings", fields={"session": "string"}, key="session", time="ts", owner="o", description="d"
    )
    with pytest.raises(DefinitionError, match="stream 'pings' has no key field 'user_id'"):
        Label(
            "pinged",
            entity=user,
            stream=anonymous,
            aggregation=agg.count(),
            horizon="1d",
            owner="o",
            description="d",
        )
