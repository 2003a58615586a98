"""A tiny run of each benchmark script, so that they cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script: str, *args: str, timeout: int) -> subprocess.CompletedProcess:
    """A benchmark script with its arguments; it must exit cleanly."""
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_core_benchmark_runs_and_prints_its_table():
    proc = _run(
        "core.py",
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
        timeout=600,
    )
    for figure in (
        "SDK ingest",
        "processing",
        "online lookup, 1 entity",
        "HTTP ingest",
        "training set 500 x 12 features over 5,000 events",
    ):
        assert figure in proc.stdout, figure


def test_serving_benchmark_runs_all_three_servers():
    proc = _run("serving.py", "--requests", "60", "--users", "300", "--clients", "1,2", timeout=900)
    for server in (
        "| headwater | 2 |",
        "| bare FastAPI + booster | 2 |",
        "| mlflow models serve | 2 |",
    ):
        assert server in proc.stdout, server
    assert "answered" not in proc.stdout  # every server accepted the requests


def test_feast_benchmark_agrees_with_feast_on_every_row():
    proc = _run("feast_pit.py", "--rows", "20000", timeout=900)
    assert "| feast duckdb |" in proc.stdout and "| feast file |" in proc.stdout
    duckdb_row = next(
        line for line in proc.stdout.splitlines() if line.startswith("| feast duckdb |")
    )
    assert duckdb_row.rstrip(" |").endswith("| 0")  # no mismatching row against Feast


def test_monitoring_benchmark_runs_and_prints_its_rates():
    proc = _run(
        "monitoring.py",
        "--users",
        "150",
        "--days",
        "30",
        "--windows",
        "5",
        "--rows",
        "60",
        "--predictions",
        "300",
        timeout=600,
    )
    assert "(false alarms)" in proc.stdout and "(detection)" in proc.stdout
    assert "predictions/s" in proc.stdout


def test_backends_benchmark_runs_and_two_workers_match_one():
    proc = _run("backends.py", "--events", "6000", "--users", "600", "--lookups", "50", timeout=600)
    assert "| Kafka + Redis: processing, 2 workers (incl. group join) |" in proc.stdout
    assert "| 2 workers vs 1: identical entities (of 200) | 200 |" in proc.stdout


def test_feast_online_benchmark_runs_and_both_agree():
    proc = _run(
        "feast_online.py", "--rows", "5000", "--calls", "50", "--requests", "100", timeout=900
    )
    assert "x 8 features: 0 mismatches" in proc.stdout
    assert "| in-process, 1 entity |" in proc.stdout and "| 8 |" in proc.stdout


def test_streams_benchmark_runs_and_every_system_agrees():
    # Quix Streams is left out of the smoke run (installing it into its venv is too slow
    # for CI); the full run (`make bench`) has it. Redis database 9, not the full run's 15.
    proc = _run(
        "streams.py",
        "--events",
        "5000",
        "--users",
        "500",
        "--no-quix",
        "--redis",
        "redis://127.0.0.1:6379/9",
        timeout=600,
    )
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")][2:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| headwater, Kafka log -> SQLite",
        "| headwater, Kafka log -> Redis",
        "| headwater, embedded log -> SQLite",
        "| bare Python loop, consuming the plain topic",
        "| bare Python loop, in memory",
    ]
    assert all(row.endswith("| 0 |") for row in rows), rows  # every value as headwater's
