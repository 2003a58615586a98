"""A tiny run of each benchmark script, so that they cannot rot.

The cheap scripts run twice (``--runs 2``), so that their set-up-once / measure-per-run split
is exercised; those starting a competitor (its own virtual environment or server), and
backends.py (whose second run costs as much as its first: two workers joining a group), once.
"""

from __future__ import annotations

import doctest
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
HEADER = "| figure | min | median | max | unit |"
RATIOS = "| ratio of medians | value |"


def _run(script: str, *args: str, timeout: int) -> subprocess.CompletedProcess:
    """A benchmark script with its arguments; it must exit cleanly and print its figures."""
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert HEADER in proc.stdout, proc.stdout
    return proc


def _figure(stdout: str, name: str) -> list[str]:
    """The min, median and max printed for figure ``name``."""
    row = next((line for line in stdout.splitlines() if line.startswith(f"| {name} |")), None)
    assert row is not None, f"no figure {name!r} in:\n{stdout}"
    return row.strip(" |").split(" | ")[1:4]


def _ratio(stdout: str, label: str) -> str:
    row = next((line for line in stdout.splitlines() if line.startswith(f"| {label} |")), None)
    assert RATIOS in stdout and row is not None, f"no ratio {label!r} in:\n{stdout}"
    return row


def test_the_figures_helper_runs_its_docstring_example():
    spec = importlib.util.spec_from_file_location("benchmarks_common", BENCHMARKS / "common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


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
        "--runs",
        "2",
        timeout=600,
    )
    assert "2 runs on the same data:" in proc.stdout
    for figure in (
        "SDK ingest, batches of 10,000",
        "processing (12 windowed features)",
        "online lookup, 1 entity x 12 features, p50",
        "HTTP ingest, batches of 1000, 4 clients",
        "data tests on every batch: processing rate vs none",
        "training set 500 x 12 features over 5,000 events",
        "training set 500 x 12 features over 5,000 events, join only",
    ):
        _figure(proc.stdout, figure)
    # the sorted copy's prefix sums and the join agree on every value
    assert _figure(proc.stdout, "training set: values differing from the join's") == ["0"] * 3


def test_many_services_benchmark_runs_every_step(tmp_path):
    proc = _run(
        "many_services.py",
        "--sizes", "2,3",
        "--events", "3000",
        "--users", "300",
        "--work", str(tmp_path),
        timeout=900,
    )  # fmt: skip
    for n in (2, 3):
        for figure in ("process", "train all", "serve start-up (every model loaded)", "/readyz",
                       "first call per service p50", "predict p99, one service"):  # fmt: skip
            _figure(proc.stdout, f"N={n} {figure}")
    _ratio(proc.stdout, "process events/s, N=3 / N=2")


def test_serving_benchmark_runs_every_server():
    proc = _run(
        "serving.py",
        "--requests",
        "60",
        "--users",
        "300",
        "--clients",
        "1,2",
        "--runs",
        "1",
        timeout=900,
    )
    servers = (
        "headwater",
        "headwater, API keys on",
        "headwater, 2 workers",
        "bare FastAPI + booster",
        "raw ASGI + booster",
        "mlflow models serve",
        "bentoml serve",
        "headwater gRPC (ModelInfer)",
        "headwater, store written every ms",
    )
    for server in servers:
        _figure(proc.stdout, f"{server}, 2 clients: req/s")
        assert _figure(proc.stdout, f"{server}: failed requests (every level)") == ["0"] * 3
        # the CPU of the server's own processes, read in clock ticks (10 ms: 60 requests may
        # not reach one): a number for every server
        cpu = _figure(proc.stdout, f"{server}, 2 clients: server CPU per request")
        assert float(cpu[1].replace(",", "")) >= 0, server
    assert "answered" not in proc.stdout  # every server accepted the requests
    for other in servers[3:7]:
        _ratio(proc.stdout, f"headwater / {other}, 2 clients (req/s)")
        _ratio(proc.stdout, f"headwater, API keys on / {other}, 2 clients (req/s)")
    _ratio(proc.stdout, "headwater / bare FastAPI + booster, 2 clients (p99)")
    _ratio(proc.stdout, "headwater, API keys on / off, 2 clients (req/s)")
    _figure(proc.stdout, "headwater, first request per entity, 1 clients: req/s")
    _figure(proc.stdout, "in-process predict, warm: p99")
    _figure(proc.stdout, "in-process predict, store written before each call: p50")
    _figure(proc.stdout, "machine jitter (pure Python of the warm p50): p99 / p50")
    _ratio(proc.stdout, "headwater, store written every ms / not written, 2 clients (req/s)")
    _ratio(
        proc.stdout, "headwater, store written every ms / bare FastAPI + booster, 2 clients (req/s)"
    )
    _ratio(proc.stdout, "headwater gRPC / headwater HTTP, 2 clients (req/s)")
    _ratio(proc.stdout, "headwater 2 workers / 1 worker, 2 clients (req/s)")


def test_feast_benchmark_agrees_with_feast_on_every_row():
    proc = _run("feast_pit.py", "--rows", "20000", "--runs", "1", timeout=900)
    for kind in ("duckdb", "file"):
        _figure(proc.stdout, f"feast {kind}: training set")
        _ratio(proc.stdout, f"headwater speed-up over feast {kind} (its seconds / headwater's)")
    # no value differs from Feast's; Feast's duckdb store returns every entity row
    assert _figure(proc.stdout, "feast duckdb: rows with a differing value") == ["0"] * 3
    assert _figure(proc.stdout, "feast file: rows with a differing value") == ["0"] * 3
    assert _figure(proc.stdout, "feast duckdb: entity rows missing from either answer") == ["0"] * 3
    # with its sorted copy and with the join alone, headwater answers the same
    assert _figure(proc.stdout, "headwater: rows where the join's answer differs") == ["0"] * 3
    _ratio(proc.stdout, "headwater, join only: speed-up over feast duckdb")


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
        "--runs",
        "2",
        timeout=600,
    )
    _figure(proc.stdout, "model's own period (false alarms): windows with a drift alert")
    _figure(proc.stdout, "after the simulated drift (detection): windows with a drift alert")
    _figure(proc.stdout, "monitor throughput (join labels, score, drift)")
    # each run's monitor judges that run's predictions, and only those
    assert _figure(proc.stdout, "monitor run: predictions judged") == ["300"] * 3


def test_backends_benchmark_runs_and_two_workers_match_one():
    proc = _run(
        "backends.py",
        "--events",
        "6000",
        "--users",
        "600",
        "--lookups",
        "50",
        "--runs",
        "1",
        timeout=600,
    )
    _figure(proc.stdout, "Kafka + Redis: processing, 2 workers (incl. group join)")
    differing = _figure(proc.stdout, "2 workers vs 1: entities with a differing value (of 200)")
    assert differing == ["0"] * 3
    _ratio(proc.stdout, "Kafka + Redis processing, 2 workers / 1 worker (events/s)")


def test_feast_online_benchmark_runs_and_both_agree():
    proc = _run(
        "feast_online.py",
        "--rows",
        "5000",
        "--calls",
        "50",
        "--requests",
        "100",
        "--runs",
        "1",
        timeout=900,
    )
    assert _figure(proc.stdout, "in-process values, 50 users x 8 features: mismatches") == ["0"] * 3
    _figure(proc.stdout, "HTTP, 8 clients: feast serve req/s")
    _ratio(
        proc.stdout,
        "headwater speed-up over Feast, in-process, 1 entity (Feast p50 / headwater p50)",
    )
    _ratio(proc.stdout, "headwater / feast serve, HTTP 8 clients (req/s)")


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
        "--runs",
        "2",
        timeout=600,
    )
    systems = [
        "headwater, Kafka log -> SQLite",
        "headwater, Kafka log -> Redis",
        "headwater, embedded log -> SQLite",
        "bare Python loop, consuming the plain topic",
        "bare Python loop, consuming the plain topic, collector off",
        "bare Python loop, in memory",
        "bare Python loop, in memory, collector off",
    ]
    timed = [
        line.split(": seconds |")[0][2:]
        for line in proc.stdout.splitlines()
        if ": seconds |" in line
    ]
    assert timed == systems
    for system in systems:  # every value as headwater's, in every run
        assert _figure(proc.stdout, f"{system}: values differing from the reference") == ["0"] * 3
    for system in systems[1:]:
        _ratio(proc.stdout, f"{system} / headwater, Kafka log -> SQLite (seconds)")


@pytest.mark.parametrize("log", [[], ["--kafka", "--partitions", "2"]], ids=["embedded", "kafka"])
def test_replay_benchmark_runs_and_follows(log):
    args = ["--events", "3000", "--users", "100", "--rate", "500", "--follow-seconds", "1"]
    proc = _run("replay.py", *args, *log, "--runs", "2", timeout=600)
    assert "2 runs on the same data:" in proc.stdout
    assert ("Kafka log (Tansu), 2 partitions" in proc.stdout) == bool(log)
    for figure in ("replay: events/s", "bare copy of the log: events/s", "follow: lag p99"):
        _figure(proc.stdout, figure)
    assert "replay / bare copy of the log (events/s)" in _ratio(
        proc.stdout, "replay / bare copy of the log (events/s)"
    )


def test_ui_benchmark_times_every_page():
    proc = _run("ui.py", "--users", "150", "--days", "30", "--runs", "1", timeout=600)
    for page in ("overview", "stream (page_views)", "monitoring (churn)"):
        for kind in ("cold", "warm"):
            assert float(_figure(proc.stdout, f"{page}: {kind}")[1]) > 0
    assert "pages over the 300 ms aim" in proc.stdout


def test_soak_benchmark_logs_every_answered_prediction():
    proc = _run(
        "soak.py",
        *("--seconds", "8", "--clients", "4", "--users", "200", "--every", "1"),
        *("--warm-up", "2"),
        timeout=600,
    )
    assert _figure(proc.stdout, "failed requests") == ["0"] * 3
    assert float(_figure(proc.stdout, "answered predictions")[1].replace(",", "")) > 100
    assert _figure(proc.stdout, "answered, not in the log after SIGTERM") == ["0"] * 3
    assert _figure(proc.stdout, "server exit code after SIGTERM") == ["0"] * 3
    assert float(_figure(proc.stdout, "server RSS, peak")[1].replace(",", "")) > 50
