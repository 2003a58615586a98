"""The model commands as a user runs them: train, runs, models, describe, explain."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import orjson
import pandas as pd

from headwater import Project
from tests.conftest import write_project
from tests.e2e.test_cli import run
from tests.unit.training.conftest import DEFINITIONS, visits


def test_train_promote_rollback_reproduce_and_describe(tmp_path):
    folder = write_project(tmp_path / "churn", DEFINITIONS)
    now = datetime.now(UTC)
    with Project(folder) as p:
        assert not p.ingest("visits", visits(end=now - timedelta(minutes=1))).rejected
    out = run("train", "churn", "-p", str(folder)).stdout
    assert "registered churn version 1" in out and "baseline" in out and "auc" in out
    run("train", "churn", "-p", str(folder))
    out = run("train", "churn", "--reproduce", "1", "-p", str(folder)).stdout
    assert "reproduces version 1: data hash identical" in out
    listed = run("runs", "churn", "-p", str(folder)).stdout
    assert listed.count("succeeded") == 3

    run("models", "promote", "churn", "1", "--reason", "first", "-p", str(folder))
    unexplained = run("models", "promote", "churn", "2", "-p", str(folder), ok=False)
    assert unexplained.returncode == 2 and "say why" in unexplained.stderr
    gated = run("models", "promote", "churn", "2", "--reason", "try", "-p", str(folder), ok=False)
    assert "was not evaluated against the current champion (version 1)" in gated.stderr
    run("models", "promote", "churn", "2", "--force", "--reason", "second", "-p", str(folder))
    assert (
        "churn: champion -> version 1 (rolled back)"
        in run("models", "rollback", "churn", "-p", str(folder)).stdout
    )
    shown = run("models", "show", "churn", "champion", "-p", str(folder)).stdout
    assert "champion: rollback v2 -> v1" in shown and "data: " in shown and ", hash " in shown
    assert "churn" in run("models", "list", "-p", str(folder)).stdout
    refused = run(
        "models", "promote", "churn_strict", "1", "--reason", "r", "-p", str(folder), ok=False
    )
    assert refused.returncode == 1 and "has no version 1" in refused.stderr
    misspelt = run("models", "show", "chrun", "-p", str(folder), ok=False)
    assert "unknown model 'chrun'" in misspelt.stderr and "churn" in misspelt.stderr
    assert "did you mean" in run("runs", "chrun", "-p", str(folder), ok=False).stderr

    described = run("describe", "visits", "-p", str(folder)).stdout
    assert "device" in described and "null rate" in described
    assert "sorted copy by user_id: " in described and " rows (partition 0 below " in described
    assert "#" in run("describe", "visits_7d", "-p", str(folder)).stdout

    assert re.search(r"│ ts +│ timestamp │.*│ 20\d\d-\d\d-\d\dT", described)  # ISO, not µs
    with Project(folder) as p:
        # distinct is exact: the users of the logged visits, counted here
        records = p.log.read("visits", 0, p.log.end_offset("visits"))
        users = {orjson.loads(r.payload)["user_id"] for r in records}
        fields = p.describe_stream("visits").fields.set_index("field")
        assert fields.loc["user_id", "distinct"] == len(users) > 100
        spine = pd.DataFrame({"user_id": ["u1", "u2"], "timestamp": [now, now]})
        explained = p.explain("churn", spine)
        assert list(explained["user_id"]) == ["u1", "u2"]
        assert explained["score"].between(0, 1).all()
