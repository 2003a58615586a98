"""Model files go to the artifacts store the project names by URL (``[stores] artifacts``),
and come back from it to serve: nothing of a model is left on the project's disk."""

from __future__ import annotations

import uuid

from headwater import Project
from headwater.stores.urls import open_artifacts
from tests.conftest import write_project
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

SERVICE = """
from headwater import Service
services = [Service("churn", model=models[0], owner="growth", description="Churn risk")]
"""


def test_a_project_trains_into_and_serves_from_an_artifacts_url(tmp_path):
    url = f"memory://artifacts-{uuid.uuid4().hex}/models"
    folder = write_project(tmp_path / "churn", DEFINITIONS + SERVICE)
    with (folder / "headwater.toml").open("a") as toml:
        toml.write(f'[stores]\nartifacts = "{url}"\n')
    with Project(folder, clock=lambda: NOW) as p:
        assert not p.ingest("visits", visits(users=60)).rejected
        p.process()
        version = p.train("churn").version
        p.promote("churn", version, force=True)
        doc = p.registry.version("churn", version)
        served = p.predict("churn", user_id="u1")
    names = open_artifacts(url, tmp_path).names("churn")
    assert sorted(doc["artifacts"].values()) == names  # names in the store, not paths
    assert {n.rsplit("/", 1)[1] for n in names} == {"model.joblib", "signature.json"}
    assert not (folder / ".headwater" / "artifacts").exists()
    assert served["model_version"] == version and 0 <= served["score"] <= 1
    with Project(folder, clock=lambda: NOW) as again:  # opened again: models from the URL
        estimator, signature = again.registry.load_model(doc)
        assert signature.features == list(again.model("churn").features)
        assert again.predict("churn", user_id="u1")["score"] == served["score"]
