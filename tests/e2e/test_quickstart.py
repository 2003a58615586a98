"""The README's first command, as a user runs it (smaller, so CI stays quick)."""

from __future__ import annotations

import subprocess
import sys

from headwater import Project
from headwater.log.base import DEAD_LETTER_STREAM


def test_quickstart_runs_end_to_end_and_leaves_a_working_project(tmp_path):
    folder = tmp_path / "shop"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "headwater",
            "quickstart",
            "--dir",
            str(folder),
            "--users",
            "300",
            "--days",
            "14",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for step in (
        "1. project",
        "2. simulated",
        "3. ingested",
        "4. processed",
        "5. online features",
        "6. training set",
        "quickstart finished",
    ):
        assert step in out, step
    assert "5,000 rows x 11 columns" in out
    with Project(folder) as p:
        assert p.plan().pending == []
        assert p.log.end_offset("page_views") > 1000
        assert p.log.end_offset(DEAD_LETTER_STREAM) == 2
        assert all(lag == 0 for lag in p.processor.lag().values())
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "headwater",
            "quickstart",
            "--dir",
            str(folder),
            "--users",
            "50",
            "--days",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
