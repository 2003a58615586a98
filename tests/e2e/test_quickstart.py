"""The README's first command, as a user runs it (smaller, so CI stays quick)."""

from __future__ import annotations

import subprocess
import sys

from headwater import Project
from headwater.log.base import DEAD_LETTER_STREAM

STEPS = (
    "1. project",
    "2. simulated",
    "3. ingested",
    "4. processed",
    "5. online features",
    "6. training set",
    "7. models trained",
    "8. predictions over HTTP",
    "quickstart finished",
)


def quickstart(folder, users: int, days: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "headwater",
            "quickstart",
            "--dir",
            str(folder),
            "--users",
            str(users),
            "--days",
            str(days),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_quickstart_runs_end_to_end_and_leaves_a_working_project(tmp_path):
    folder = tmp_path / "shop"
    proc = quickstart(folder, users=400, days=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for step in STEPS:
        assert step in proc.stdout, step
    assert "5,000 rows x 11 columns" in proc.stdout
    with Project(folder) as p:
        assert p.plan().pending == []
        assert p.log.end_offset("page_views") > 1000
        assert p.log.end_offset(DEAD_LETTER_STREAM) == 2
        assert all(lag == 0 for lag in p.processor.lag().values())
        assert p.log.end_offset("predictions") == 200
        for model in ("churn", "purchase_propensity"):
            champion = p.registry.version(model, "champion")
            assert champion["metrics"]["auc"] > 0.6, (model, champion["metrics"])
    # A second run replaces the folder the first one made.
    again = quickstart(folder, users=300, days=25)
    assert again.returncode == 0, again.stderr


def test_quickstart_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine").mkdir()
    proc = quickstart(tmp_path / "mine", users=10, days=20)
    assert proc.returncode == 1
    assert "was not made by the quickstart" in proc.stderr
