"""One platform, many services: how each cost grows with the number N of streams, feature sets,
models and services, for the same events.

For each N of ``--sizes`` a project is generated: N streams ``s0..s{N-1}`` of one user entity
(owned by 10 teams in turn), one feature set per stream (event count over 1h, 1d, 7d and the
amount summed over 7d), one label per stream (any event in the next day), N LightGBM models
(model i reads stream i's features and stream i+1's 7-day count) and N services. The same
``--events`` events of ``--users`` users over 14 days, ending now, are spread over the N
streams (event j goes to stream j mod N), so every N processes the same events.

Set-up, once per N: the project is written and the events ingested (timed, printed apart).
Each of ``--runs`` runs then starts from the log alone (every other store emptied) and times:
  plan, apply          `headwater plan` and `headwater apply` as processes (start-up included)
  process              `Project.process()` over every event: events/s
  online store         its size on disk, and bytes per stored entity state
  train all            `headwater train --all --jobs 2` (one log snapshot, shared training
                       sets) in a process: seconds, and seconds per model
  serve start-up       `headwater serve --preload` until /healthz answers, and until every
                       service's model is loaded (/readyz); the server's RSS then
  /readyz              the probe's time (every service reported), median of 20
  first call           one request per service on a server without --preload (each loads
                       its model): p50 / p99 over up to 50 services
  predict              steady requests to one service, one client: p50 / p99 of 1,000

    python benchmarks/many_services.py [--sizes 10,50,200,500] [--events 2000000]
                                       [--users 100000] [--runs 1] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import (  # noqa: E402
    DAY_US,
    WORK,
    Figures,
    percentiles,
    tree_rss_mb,
)

from headwater import Project  # noqa: E402

DEFINITIONS = """
from headwater import Entity, Feature, Label, Model, Service, Stream, agg

N = {n}
TEAMS = [f"team{{t}}" for t in range(10)]
user = Entity("user", keys="user_id", owner="platform", description="A user")
streams, features, labels, models, services = [], [], [], [], []
for i in range(N):
    team = TEAMS[i % len(TEAMS)]
    s = Stream(f"s{{i}}", fields={{"user_id": "string", "amount": "float", "ts": "timestamp"}},
               key="user_id", time="ts", owner=team, description=f"Events of kind {{i}}")
    streams.append(s)
    features += [
        Feature(f"n{{i}}", entity=user, stream=s, aggregation=agg.count(),
                windows=["1h", "1d", "7d"], owner=team, description="Events"),
        Feature(f"amount{{i}}", entity=user, stream=s, aggregation=agg.sum("amount"),
                windows=["7d"], owner=team, description="Amount"),
    ]
    labels.append(Label(f"active{{i}}", entity=user, stream=s, aggregation=agg.count(),
                        horizon="1d", transform=lambda n: n > 0, owner=team,
                        description="Any event in the next day"))


def lightgbm():
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_estimators=20, num_leaves=15, n_jobs=1, verbose=-1, random_state=1)


for i in range(N):
    team = TEAMS[i % len(TEAMS)]
    inputs = [f"n{{i}}_1h", f"n{{i}}_1d", f"n{{i}}_7d", f"amount{{i}}_7d", f"n{{(i + 1) % N}}_7d"]
    models.append(Model(f"m{{i}}", label=labels[i], features=inputs, estimator=lightgbm,
                        lookback="3d", min_rows=50, owner=team, description="Activity"))
    services.append(Service(f"svc{{i}}", model=models[i], owner=team, description="Activity"))
"""


def events(n: int, users: int, end_us: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    ts = np.sort(end_us - rng.integers(1, 14 * DAY_US, n, dtype=np.int64))
    return pa.table(
        {
            "user_id": pa.array(rng.integers(0, users, n)).cast(pa.string()),
            "amount": np.round(rng.gamma(2.0, 30.0, n), 2),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        }
    )


def set_up(n: int, table: pa.Table, work: Path) -> tuple[Path, float]:
    folder = work / f"n{n}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "headwater.toml").write_text(
        f'[project]\nname = "many{n}"\ndefinitions = ["definitions.py"]\n'
    )
    (folder / "definitions.py").write_text(DEFINITIONS.format(n=n))
    start = time.perf_counter()
    with Project(folder) as p:
        kind = np.arange(table.num_rows) % n
        for i in range(n):
            part = table.filter(pa.array(kind == i))
            for offset in range(0, part.num_rows, 500_000):
                result = p.ingest(f"s{i}", part.slice(offset, 500_000))
                assert not result.rejected, result.rejected[:1]
    return folder, time.perf_counter() - start


def fresh(folder: Path) -> None:
    """Everything but the log goes: the run starts from the events alone."""
    state = folder / ".headwater"
    for entry in state.iterdir():
        if not entry.name.startswith("log.db"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def cli(folder: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "headwater", *args, "-p", str(folder)],
        check=True,
        capture_output=True,
        timeout=7200,
    )
    return time.perf_counter() - start


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(folder: Path, *extra: str) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    log = (folder / "server.log").open("ab")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "headwater", "serve", "-p", str(folder), "--port", str(port),
         *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # a crash leaves its stack in the log
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, (folder / "server.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "the server did not start"
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc, base, time.perf_counter() - start
        except httpx.HTTPError:
            time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=60)


def all_loaded(base: str) -> bool:
    services = httpx.get(f"{base}/readyz", timeout=60).json()["services"]
    return all(v["status"] == "loaded" for s in services.values() for v in s["variants"].values())


def measure(n: int, folder: Path, figures: Figures, users: int) -> None:
    fresh(folder)
    figures.add(f"N={n} plan", cli(folder, "plan"), "s")
    figures.add(f"N={n} apply", cli(folder, "apply"), "s")
    with Project(folder) as p:
        start = time.perf_counter()
        stats = p.process()
        seconds = time.perf_counter() - start
    figures.add(f"N={n} process", round(stats.events / seconds), "events/s")
    online = folder / ".headwater" / "online.db"
    size = online.stat().st_size
    import sqlite3

    with sqlite3.connect(online) as db:
        (states,) = db.execute("select count(*) from states").fetchone()
    figures.add(f"N={n} online store", size / 2**20, "MiB")
    figures.add(f"N={n} online store per entity state", round(size / max(states, 1)), "bytes")
    seconds = cli(folder, "train", "--all", "--jobs", "2")
    figures.add(f"N={n} train all", seconds, "s")
    figures.add(f"N={n} train, per model", seconds / n, "s")
    with Project(folder) as p:  # every first version becomes its service's champion
        for i in range(n):
            p.promote(f"m{i}", 1, reason="benchmark")

    proc, base, up = start_server(folder, "--preload")
    try:
        start = time.perf_counter() - up
        deadline = time.monotonic() + 600
        while not all_loaded(base):
            assert time.monotonic() < deadline, "the models did not load in 10 minutes"
            time.sleep(0.05)
        figures.add(f"N={n} serve start-up (/healthz)", up, "s")
        figures.add(f"N={n} serve start-up (every model loaded)", time.perf_counter() - start, "s")
        figures.add(f"N={n} server RSS, every model loaded", tree_rss_mb(proc.pid), "MiB")
        probes = []
        with httpx.Client(base_url=base, timeout=60) as client:
            for _ in range(20):
                t = time.perf_counter()
                assert client.get("/readyz").status_code == 200
                probes.append(time.perf_counter() - t)
            figures.add(f"N={n} /readyz", percentiles(probes)[0], "ms")
            body = {"entity": {"user_id": "1"}}
            latencies = []
            for i in range(1100):
                body["entity"]["user_id"] = str(i % users)
                t = time.perf_counter()
                assert client.post("/v1/predict/svc0", json=body).status_code == 200
                latencies.append(time.perf_counter() - t)
            p50, p99 = percentiles(latencies[100:])
            figures.add(f"N={n} predict p50, one service", p50, "ms")
            figures.add(f"N={n} predict p99, one service", p99, "ms")
    finally:
        stop(proc)

    proc, base, _ = start_server(folder)
    try:
        firsts = []
        step = max(1, n // 50)
        with httpx.Client(base_url=base, timeout=60) as client:
            for i in range(0, n, step):
                t = time.perf_counter()
                answer = client.post(f"/v1/predict/svc{i}", json={"entity": {"user_id": "3"}})
                firsts.append(time.perf_counter() - t)
                assert answer.status_code == 200, answer.text
        p50, p99 = percentiles(firsts)
        figures.add(f"N={n} first call per service p50", p50, "ms")
        figures.add(f"N={n} first call per service p99", p99, "ms")
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,50,200,500")
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1, help="measured runs per N (default 1)")
    parser.add_argument("--work", type=Path, default=WORK / "many_services", help="projects here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    os.environ.setdefault("HEADWATER_PII_SECRET", "0" * 64)
    end_us = (time.time_ns() // 1000 // 60_000_000) * 60_000_000  # now, to the minute
    table = events(args.events, args.users, end_us)
    print(f"{args.events:,} events of {args.users:,} users; N = {sizes}", flush=True)
    figures = Figures(args.runs)
    folders = {}
    for n in sizes:
        folders[n], seconds = set_up(n, table, args.work)
        print(f"set-up N={n}: ingest {args.events / seconds:,.0f} events/s", flush=True)
    for _ in figures.runs():
        for n in sizes:
            print(f"  N={n}", flush=True)
            measure(n, folders[n], figures, args.users)
    for name, numerator in (("process events/s", "process"), ("train all s", "train all")):
        for n in sizes[1:]:
            figures.compare(
                f"{name}, N={n} / N={sizes[0]}", f"N={n} {numerator}", f"N={sizes[0]} {numerator}"
            )
    print(figures.report())


if __name__ == "__main__":
    main()
