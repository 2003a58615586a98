"""Online feature lookups: headwater vs Feast, in-process and over HTTP (`feast serve`).

The same data as feast_pit.py's size S (1M feature rows, 10k users, 6 float + 2 int features).
Feast materializes it into its SQLite online store; headwater processes the same rows from its
log into its SQLite online store as `last` features (the latest value, as Feast serves it).
Measured, after both are loaded:
  in-process  1 entity and 100 entities per call, p50/p99 over --calls calls
  HTTP        single-entity lookups at 1 and 8 concurrent clients: req/s, p50, p99
              (`feast serve --no-access-log`, headwater's POST /v1/features; one process each)
Every run checks that both return the same values for a sample of users.

    python benchmarks/feast_online.py [--rows 1000000] [--calls 10000]
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
from common import fresh_dir, load  # noqa: E402
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
users, calls = int(sys.argv[4]), int(sys.argv[5])
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
one, hundred = timed(1), timed(100)[: max(calls // 10, 10)]
sample = store.get_online_features(
    features=refs, entity_rows=[{"user_id": u} for u in range(50)]
).to_dict()
print(json.dumps({"materialize_s": materialize_s, "one": one, "hundred": hundred,
                  "sample": sample}))
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


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.array(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=4000, help="HTTP requests per level")
    ap.add_argument("--clients", default="1,8")
    args = ap.parse_args()
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

    from headwater import Project
    from headwater.definitions.types import to_micros

    hw = work / "headwater"
    hw.mkdir()
    (hw / "headwater.toml").write_text(
        '[project]\nname = "online"\ndefinitions = ["definitions.py"]\n'
    )
    fields = " ".join(f'"{n}": "{"float" if n.startswith("f") else "int"}",' for n in NAMES)
    (hw / "definitions.py").write_text(
        textwrap.dedent(DEFINITIONS % {"fields": fields, "names": NAMES})
    )
    end_us = to_micros(end)
    results: dict[str, dict[str, float]] = {}
    with Project(hw, clock=lambda: end_us) as p:
        t = time.perf_counter()
        for batch in pq.ParquetFile(features).iter_batches(batch_size=200_000):
            p.ingest("stats", pa.Table.from_batches([batch]))
        p.process()
        load_s = time.perf_counter() - t
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

        one, hundred = timed(1, args.calls), timed(100, max(args.calls // 10, 10))
        ours_sample = p.online_features([{"user_id": u} for u in range(50)], names)
    results["headwater"] = {"load_s": load_s}
    results["headwater"].update(zip(("p50_1", "p99_1"), percentiles(one), strict=True))
    results["headwater"].update(zip(("p50_100", "p99_100"), percentiles(hundred), strict=True))
    print(f"  headwater: ingest + process {load_s:.1f}s", flush=True)

    script = work / "feast_setup.py"
    script.write_text(FEAST_SETUP % {"names": NAMES})
    proc = subprocess.run(
        [
            str(FEAST_VENV / "bin" / "python"),
            str(script),
            str(work / "repo"),
            str(features),
            end.isoformat(),
            str(users),
            str(args.calls),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    feast = json.loads(proc.stdout.strip().splitlines()[-1])
    results["feast"] = {"load_s": feast["materialize_s"]}
    results["feast"].update(zip(("p50_1", "p99_1"), percentiles(feast["one"]), strict=True))
    results["feast"].update(zip(("p50_100", "p99_100"), percentiles(feast["hundred"]), strict=True))
    print(f"  feast: materialize {feast['materialize_s']:.1f}s", flush=True)
    mismatches = 0
    for i, row in enumerate(ours_sample):
        for n in NAMES:
            theirs = feast["sample"][n][i]
            mine = row[f"{n}_lifetime"]
            if not (theirs == mine or (theirs is None and mine is None)):
                mismatches += 1
    print(f"  values compared for 50 users x {len(NAMES)} features: {mismatches} mismatches")
    for name, r in results.items():
        print(
            f"  {name:<12} in-process p50/p99 ms: 1 entity {r['p50_1']:.3f}/{r['p99_1']:.3f}, "
            f"100 entities {r['p50_100']:.3f}/{r['p99_100']:.3f}",
            flush=True,
        )

    # HTTP: each server alone on the machine with the load generator
    http: dict[str, dict[int, dict[str, float]]] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    levels = [int(c) for c in args.clients.split(",")]
    rng = np.random.default_rng(9)
    ids = [int(u) for u in rng.integers(0, users, args.requests)]
    servers = {
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
            for clients in levels:
                r = load(url, bodies, clients)
                http.setdefault(name, {})[clients] = r
                print(
                    f"  {name:<12} HTTP {clients} clients: {r['rps']:,.0f} req/s p50 "
                    f"{r['p50']:.2f} ms p99 {r['p99']:.2f} ms errors {r['errors']:.0f}",
                    flush=True,
                )
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()

    ours, theirs = results["headwater"], results["feast"]
    print("\n| lookup | headwater p50 / p99 ms | Feast p50 / p99 ms | speed-up (p50) |")
    print("| --- | --- | --- | --- |")
    for label, key in (("in-process, 1 entity", "1"), ("in-process, 100 entities", "100")):
        print(
            f"| {label} | {ours['p50_' + key]:.3f} / {ours['p99_' + key]:.3f} | "
            f"{theirs['p50_' + key]:.3f} / {theirs['p99_' + key]:.3f} | "
            f"{theirs['p50_' + key] / ours['p50_' + key]:.1f}x |"
        )
    print(
        "\n| HTTP clients | headwater req/s (p50 / p99 ms) | feast serve req/s (p50 / p99 ms)"
        " | ratio (req/s) |"
    )
    print("| --- | --- | --- | --- |")
    for clients in levels:
        a, b = http["headwater"][clients], http["feast serve"][clients]
        print(
            f"| {clients} | {a['rps']:,.0f} ({a['p50']:.2f} / {a['p99']:.2f}) | "
            f"{b['rps']:,.0f} ({b['p50']:.2f} / {b['p99']:.2f}) | {a['rps'] / b['rps']:.1f}x |"
        )


if __name__ == "__main__":
    main()
