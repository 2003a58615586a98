"""A tiny run of each benchmark script, so that they cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_core_benchmark_runs_and_prints_its_table():
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "core.py"),
            "--events",
            "3000",
            "--http-events",
            "300",
            "--users",
            "100",
            "--lookups",
            "20",
            "--ts-events",
            "5000",
            "--ts-spine",
            "500",
            "--ts-users",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for figure in (
        "SDK ingest",
        "processing",
        "online lookup, 1 entity",
        "HTTP ingest",
        "training set 500 x 12 features over 5,000 events",
    ):
        assert figure in proc.stdout, figure
