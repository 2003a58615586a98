"""Online feature lookups: headwater vs Feast, in-process and over HTTP (`feast serve`).

The same data as feast_pit.py's size S (1M feature rows, 10k users, 6 float + 2 int features).
Feast materializes it into its SQLite online store; headwater processes the same rows from its
log into its SQLite online store as `last` features (the latest value, as Feast serves it).
Measured, after both are loaded:
  in-process  1 entity and 100 entities per call, p50/p99 over --calls calls
  HTTP        single-entity lookups at 1 and 8 concurrent clients: req/s, p50, p99
              (`feast serve --no-access-log`, headwater's POST /v1/features; one process each)
Both are loaded once (set-up); each of ``--runs`` runs then measures every figure again and
checks that both return the same values for a sample of users. Figures are printed as
min / median / max over the runs.

    python benchmarks/feast_online.py [--rows 1000000] [--calls 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Figures, add_runs_argument, fresh_dir, load, percentiles  # noqa: E402
from feast_pit import FEAST_VENV, FLOATS, INTS, START, generate  # noqa: E402
from serving import free_port, wait_ready  # noqa: E402

NAMES = FLOATS + INTS

FEAST_SETUP = """
import json, sys, time
from datetime import timedelta
from pathlib import Path

import numpy as np
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

repo, features, end = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
users, calls, runs = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
repo.mkdir(parents=True, exist_ok=True)
(repo / "feature_store.yaml").write_text(
    "project: bench\\nregistry: registry.db\\nprovider: local\\n"
    "online_store:\\n  type: sqlite\\n  path: online.db\\noffline_store:\\n  type: duckdb\\n"
    "entity_key_serialization_version: 3\\n"
)
(repo / "features.py").write_text('''
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
source = FileSource(path=%%r, timestamp_field="event_timestamp")
stats = FeatureView(name="stats", entities=[user], ttl=timedelta(days=365),
    schema=[Field(name=n, dtype=Float64 if n.startswith("f") else Int64) for n in %%r],
    source=source)
''' %% (features, %(names)r))
import importlib.util
spec = importlib.util.spec_from_file_location("features", repo / "features.py")
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
store = FeatureStore(repo_path=str(repo))
store.apply([mod.user, mod.stats])
from datetime import datetime
t = time.perf_counter()
store.materialize(datetime.fromisoformat("2025-01-01T00:00:00+00:00"), datetime.fromisoformat(end))
materialize_s = time.perf_counter() - t
refs = [f"stats:{n}" for n in %(names)r]
rng = np.random.default_rng(5)
def timed(batch):
    out = []
    for _ in range(calls):
        ids = [int(u) for u in rng.integers(0, users, batch)]
        t = time.perf_counter()
        rows = [{"user_id": u} for u in ids]
        store.get_online_features(features=refs, entity_rows=rows).to_dict()
        out.append(time.perf_counter() - t)
    return out
for _ in range(200):
    store.get_online_features(features=refs, entity_rows=[{"user_id": 1}]).to_dict()
out = []
for _ in range(runs):
    one, hundred = timed(1), timed(100)[: max(calls // 10, 10)]
    sample = store.get_online_features(
        features=refs, entity_rows=[{"user_id": u} for u in range(50)]
    ).to_dict()
    out.append({"one": one, "hundred": hundred, "sample": sample})
print(json.dumps({"materialize_s": materialize_s, "runs": out}))
"""

DEFINITIONS = """
from headwater import Entity, Feature, Stream, agg

user = Entity("user", keys="user_id", owner="bench", description="A user")
stats = Stream("stats", fields={"user_id": "int", %(fields)s "event_timestamp": "timestamp"},
               key="user_id", time="event_timestamp", required=%(names)r, owner="bench",
               description="Feature rows")
features = [
    Feature(name, entity=user, stream=stats, aggregation=agg.last(name), windows=["lifetime"],
            owner="bench", description="Latest value")
    for name in %(names)r
]
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=4000, help="HTTP requests per level")
    ap.add_argument("--clients", default="1,8")
    add_runs_argument(ap)
    args = ap.parse_args()
    figures = Figures(args.runs)
    users = max(args.rows // 100, 10)
    if not (FEAST_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(FEAST_VENV)], check=True)
        subprocess.run(
            [str(FEAST_VENV / "bin" / "pip"), "install", "-q", "feast[duckdb]"], check=True
        )
    work = fresh_dir("feast-online")
    features, _ = generate(args.rows, users, 10, work)
    end = START + pd.Timedelta(days=91)
    print(f"{args.rows:,} feature rows, {users:,} users", flush=True)

    hw = work / "headwater"
    ours = headwater_in_process(hw, features, end, users, args.calls, figures)
    theirs = feast_in_process(work, features, end, users, args.calls, figures)
    for run, (mine, feast) in enumerate(zip(ours, theirs, strict=True), start=1):
        mismatches = count_mismatches(mine, feast)
        print(f"  run {run}: 50 users x {len(NAMES)} features compared: {mismatches} mismatches")
        figures.add(
            f"in-process values, 50 users x {len(NAMES)} features: mismatches", mismatches, "values"
        )

    levels = [int(c) for c in args.clients.split(",")]
    rng = np.random.default_rng(9)
    ids = [int(u) for u in rng.integers(0, users, args.requests)]
    names = [f"{n}_lifetime" for n in NAMES]
    servers: dict[str, tuple[list[str], str, list[dict], str]] = {
        "headwater": (
            [sys.executable, "-m", "headwater", "serve", "-p", str(hw)],
            "/v1/features",
            [{"entities": [{"user_id": u}], "features": names} for u in ids],
            "/healthz",
        ),
        "feast serve": (
            [
                str(FEAST_VENV / "bin" / "feast"),
                "-c",
                str(work / "repo"),
                "serve",
                "--no-access-log",
                "--max-requests",
                "0",
            ],
            "/get-online-features",
            [
                {"features": [f"stats:{n}" for n in NAMES], "entities": {"user_id": [u]}}
                for u in ids
            ],
            "/health",
        ),
    }
    for name, (cmd, path, bodies, health) in servers.items():
        http_runs(name, cmd, path, bodies, health, levels, figures)

    for label in ("1 entity", "100 entities"):
        figures.compare(
            f"headwater speed-up over Feast, in-process, {label} (Feast p50 / headwater p50)",
            f"in-process, {label}: Feast p50",
            f"in-process, {label}: headwater p50",
        )
    for clients in levels:
        figures.compare(
            f"headwater / feast serve, HTTP {clients} clients (req/s)",
            f"HTTP, {clients} clients: headwater req/s",
            f"HTTP, {clients} clients: feast serve req/s",
        )
    print(figures.report())


def headwater_in_process(
    hw: Path, features: Path, end: pd.Timestamp, users: int, calls: int, figures: Figures
) -> list[list[dict]]:
    """Load once (set-up), then each run: timed lookups, and the values of a sample of users."""
    from headwater import Project
    from headwater.definitions.types import to_micros

    hw.mkdir()
    (hw / "headwater.toml").write_text(
        '[project]\nname = "online"\ndefinitions = ["definitions.py"]\n'
    )
    fields = " ".join(f'"{n}": "{"float" if n.startswith("f") else "int"}",' for n in NAMES)
    (hw / "definitions.py").write_text(
        textwrap.dedent(DEFINITIONS % {"fields": fields, "names": NAMES})
    )
    end_us = to_micros(end)
    samples = []
    with Project(hw, clock=lambda: end_us) as p:
        t = time.perf_counter()
        for batch in pq.ParquetFile(features).iter_batches(batch_size=200_000):
            p.ingest("stats", pa.Table.from_batches([batch]))
        p.process()
        print(f"  headwater: ingest + process {time.perf_counter() - t:.1f}s (set-up, once)")
        rng = np.random.default_rng(5)
        names = [f"{n}_lifetime" for n in NAMES]
        for _ in range(200):
            p.online_features({"user_id": 1}, names)

        def timed(batch: int, calls: int) -> list[float]:
            out = []
            for _ in range(calls):
                rows = [{"user_id": int(u)} for u in rng.integers(0, users, batch)]
                start = time.perf_counter()
                p.online_features(rows, names)
                out.append(time.perf_counter() - start)
            return out

        for _ in figures.runs("headwater in-process"):
            one, hundred = timed(1, calls), timed(100, max(calls // 10, 10))
            record_lookups(figures, "headwater", one, hundred)
            samples.append(p.online_features([{"user_id": u} for u in range(50)], names))
    return samples


def feast_in_process(
    work: Path, features: Path, end: pd.Timestamp, users: int, calls: int, figures: Figures
) -> list[dict]:
    """Feast's side in its own venv: materialize once, then every run; its samples."""
    script = work / "feast_setup.py"
    script.write_text(FEAST_SETUP % {"names": NAMES})
    print(f"Feast in-process: materialize, then {figures.count} runs", flush=True)
    proc = subprocess.run(
        [
            str(FEAST_VENV / "bin" / "python"),
            str(script),
            str(work / "repo"),
            str(features),
            end.isoformat(),
            str(users),
            str(calls),
            str(figures.count),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    feast = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  feast: materialize {feast['materialize_s']:.1f}s (set-up, once)", flush=True)
    for run in feast["runs"]:
        record_lookups(figures, "Feast", run["one"], run["hundred"])
    return [run["sample"] for run in feast["runs"]]


def record_lookups(figures: Figures, system: str, one: list[float], hundred: list[float]) -> None:
    for label, samples in (("1 entity", one), ("100 entities", hundred)):
        p50, p99 = percentiles(samples)
        figures.add(f"in-process, {label}: {system} p50", p50, "ms")
        figures.add(f"in-process, {label}: {system} p99", p99, "ms")
        print(f"  {system:<10} in-process, {label}: p50 {p50:.3f} ms, p99 {p99:.3f} ms", flush=True)


def count_mismatches(ours: list[dict], feast: dict) -> int:
    mismatches = 0
    for i, row in enumerate(ours):
        for n in NAMES:
            theirs = feast[n][i]
            mine = row[f"{n}_lifetime"]
            if not (theirs == mine or (theirs is None and mine is None)):
                mismatches += 1
    return mismatches


def http_runs(
    name: str,
    cmd: list[str],
    path: str,
    bodies: list[dict],
    health: str,
    levels: list[int],
    figures: Figures,
) -> None:
    """One server alone on the machine with the load generator, started once for every run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = free_port()
    server = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}{health}", server)
        url = f"http://127.0.0.1:{port}{path}"
        load(url, bodies[:200], 1)  # warm up
        for _ in figures.runs(f"HTTP, {name}"):
            errors = 0
            for clients in levels:
                r = load(url, bodies, clients)
                figures.add(f"HTTP, {clients} clients: {name} req/s", r["rps"], "req/s")
                figures.add(f"HTTP, {clients} clients: {name} p50", r["p50"], "ms")
                figures.add(f"HTTP, {clients} clients: {name} p99", r["p99"], "ms")
                errors += int(r["errors"])
                print(
                    f"  {name:<12} HTTP {clients} clients: {r['rps']:,.0f} req/s p50 "
                    f"{r['p50']:.2f} ms p99 {r['p99']:.2f} ms errors {r['errors']:.0f}",
                    flush=True,
                )
            figures.add(f"HTTP: {name} failed requests (every level)", errors, "requests")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
