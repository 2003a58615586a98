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
    "9. 21 days later",
    "10. the monitor",
    "retraining churn",
    "quickstart finished",
)


def quickstart(folder, users: int, days: int, *extra: str) -> subprocess.CompletedProcess:
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
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_quickstart_runs_end_to_end_and_leaves_a_working_project(tmp_path):
    folder = tmp_path / "shop"
    proc = quickstart(folder, users=400, days=42)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for step in STEPS:
        assert step in proc.stdout, step
    assert "5,000 rows x 11 columns" in proc.stdout
    with Project(folder) as p:
        assert p.plan().pending == []
        assert p.log.end_offset("page_views") > 1000
        assert p.log.end_offset(DEAD_LETTER_STREAM) == 2
        assert all(lag == 0 for lag in p.processor.lag().values())
        served = p.log.end_offset("predictions")
        assert served > 200  # 200 over HTTP, then the users scored again after the drift
        for model in ("churn", "purchase_propensity"):
            champion = p.registry.version(model, "champion")
            assert champion["metrics"]["auc"] > 0.6, (model, champion["metrics"])
        # the loop: labels matured for the 200 served, a drift alert, a retrained challenger
        assert "200 (100%)" in proc.stdout
        assert p.log.end_offset("alerts") > 0
        challenger = p.registry.aliases("churn")["challenger"]["history"][-1]
        assert challenger["by"] == "monitor" and "retrained" in challenger["reason"]
        report = (folder / "reports" / "churn.html").read_text()
        assert "Live auc by day" in report and "Drift of v1" in report
    scored = subprocess.run(
        [
            sys.executable,
            "-m",
            "headwater",
            "score",
            "retention",
            "-o",
            str(tmp_path / "s.csv"),
            "-p",
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert scored.returncode == 0, scored.stderr
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0].startswith("user_id,timestamp,prediction_id,score") and len(rows) > 300
    # A second run replaces the folder the first one made; --no-loop stops after serving.
    again = quickstart(folder, 300, 25, "--no-loop")
    assert again.returncode == 0, again.stderr
    assert "8. predictions over HTTP" in again.stdout and "10. the monitor" not in again.stdout


def test_quickstart_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine").mkdir()
    proc = quickstart(tmp_path / "mine", users=10, days=20)
    assert proc.returncode == 1
    assert "was not made by the quickstart" in proc.stderr
