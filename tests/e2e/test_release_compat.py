"""A project written by headwater 0.1.0 (before the package layout changed) still opens, serves,
trains and monitors: its log, stores, registry, artifacts, step cache and ledger are read where
that release left them, from a folder other than the one it was made in.

The fixture was written by the code of commit 02112b4 with the script it holds (make.py).
"""

from __future__ import annotations

import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from headwater import Project
from headwater.monitoring.ledger import Ledger
from headwater.monitoring.monitor import Monitor

LOCAL = "http://localhost"  # the server answers loopback Host names only

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release-0.1.0.tar.gz"
NOW = datetime(2026, 3, 1, tzinfo=UTC)
FEATURES = ["visits_7d", "visits_30d", "device_lifetime"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(root, filter="data")
    expected = json.loads((root / "expected.json").read_text())
    with Project(root / "churn", clock=lambda: NOW) as project:
        yield project, expected


def test_online_features_and_predictions_are_those_of_the_release(release):
    project, expected = release
    for user, values in expected["features"].items():
        assert project.online_features({"user_id": user}, FEATURES) == values
    for user, response in expected["predictions"].items():
        got = project.predict("churn", user_id=user)
        assert got.pop("prediction_id")
        assert got.pop("score") == pytest.approx(response["score"])
        assert got == {k: v for k, v in response.items() if k != "score"}


def test_the_release_serves_over_http(release):
    project, expected = release
    with TestClient(project.app(), base_url=LOCAL) as client:
        for user, response in expected["predictions"].items():
            r = client.post("/v1/predict/churn", json={"entity": {"user_id": user}})
            assert r.status_code == 200, r.text
            answer = r.json()["predictions"][0]
            assert answer["score"] == pytest.approx(response["score"])
            assert answer["model_version"] == expected["version"]


def test_the_release_reproduces_and_trains(release):
    project, expected = release
    again = project.train("churn", reproduce=expected["version"])
    doc = project.registry.version("churn", again.version)
    assert doc["lineage"]["snapshot"]["data_hash"] == expected["data_hash"]
    assert again.version == expected["version"] + 1


def test_the_release_ledger_is_read_and_advanced(release):
    project, _ = release
    ledger = Ledger(project.monitor_context())
    before = ledger.performance(0, project.now() + 1, "churn")
    assert sum(row.predictions for row in before if row.day is None) >= 15
    ledger.advance(project.now())
    reports = Monitor(project.monitor_context()).run(
        "churn", since_us=project.now() - 7 * 86_400_000_000
    )
    assert reports and reports[0].predictions >= 15
