"""Soak: `headwater serve` under a steady load for a bounded time — errors, every answered
prediction in the log after SIGTERM, and the server's memory over the run.

The quickstart's project and churn model are set up once (as in serving.py); then the
server starts, ``--clients`` keep-alive clients (over 2 load processes) send single-entity
predict requests back to back for ``--seconds``, and the server's RSS (its process tree,
workers included) is read from /proc every ``--every`` seconds. At the end the server gets
SIGTERM and the prediction log is read: every prediction id a client was answered must be in
it. The RSS growth is the last sample over the first one taken after the warm-up (the first
``--warm-up`` seconds of load), which is what a leak would move.

    python benchmarks/soak.py [--seconds 600] [--clients 32] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Figures, exchange, fresh_dir, tree_rss_mb  # noqa: E402
from serving import free_port, prepare, wait_ready  # noqa: E402

from headwater import Project  # noqa: E402


async def _client(
    port: int, bodies: list[bytes], until: float, ids: list[str], errors: list[str]
) -> int:
    """One keep-alive connection predicting until ``until``; the prediction ids answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        "POST /v1/predict/retention HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    )
    sent, i = 0, 0
    try:
        while time.time() < until:
            body = bodies[i % len(bodies)]
            i += 1
            status, answer = await exchange(reader, writer, head, body)
            sent += 1
            if b" 200 " not in status:
                errors.append(status.decode().strip())
                continue
            ids.extend(p["prediction_id"] for p in orjson.loads(answer)["predictions"])
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        errors.append(repr(exc))
    finally:
        writer.close()
    return sent


def _load(args: tuple[int, list[list[bytes]], float]) -> tuple[int, list[str], list[str]]:
    port, per_client, until = args
    ids: list[str] = []
    errors: list[str] = []

    async def main() -> list[int]:
        return await asyncio.gather(*(_client(port, b, until, ids, errors) for b in per_client))

    sent = asyncio.run(main())
    return sum(sent), ids, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, help="headwater serve --workers")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--every", type=float, default=10, help="seconds between RSS samples")
    ap.add_argument("--warm-up", type=float, default=30, help="seconds before the base RSS")
    args = ap.parse_args()
    work = fresh_dir("soak")
    print("preparing the quickstart's project and churn model ...", flush=True)
    project, users = prepare(args.users, work / "shop")
    project.close()  # it made no prediction: every one in the log comes from the soak
    port = free_port()
    cmd = [sys.executable, "-m", "headwater", "serve", "-p", str(work / "shop")]
    server = subprocess.Popen(
        [*cmd, "--port", str(port), "--workers", str(args.workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_ready(f"http://127.0.0.1:{port}/healthz", server)
    bodies = [orjson.dumps({"entity": {"user_id": u}}) for u in users]
    per_client = [bodies[i :: args.clients] for i in range(args.clients)]
    procs = min(2, args.clients)
    start = time.time()
    until = start + args.seconds
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(args.every):
            samples.append((time.time() - start, tree_rss_mb(server.pid)))

    sampler = threading.Thread(target=sample)
    sampler.start()
    print(f"{args.clients} clients for {args.seconds:g} s ...", flush=True)
    try:
        with multiprocessing.get_context("spawn").Pool(procs) as pool:
            results = pool.map(_load, [(port, per_client[i::procs], until) for i in range(procs)])
    finally:
        done.set()
        sampler.join()
        elapsed = time.time() - start
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=120)
    sent = sum(r[0] for r in results)
    answered = {i for r in results for i in r[1]}
    errors = [e for r in results for e in r[2]]
    with Project(work / "shop") as p:
        records = p.log.read("predictions", 0, 100_000_000)
    logged = {orjson.loads(r.payload)["prediction_id"] for r in records}
    base = next((mb for t, mb in samples if t >= args.warm_up), samples[0][1] if samples else 0)
    last = samples[-1][1] if samples else 0
    figures = Figures(1)
    figures.add("requests", sent, "requests")
    figures.add("requests/s", sent / elapsed, "req/s")
    figures.add("failed requests", len(errors), "requests")
    figures.add("answered predictions", len(answered), "predictions")
    figures.add("answered, not in the log after SIGTERM", len(answered - logged), "predictions")
    figures.add("server exit code after SIGTERM", code, "")
    figures.add("server RSS after the warm-up", base, "MB")
    figures.add("server RSS at the end", last, "MB")
    figures.add("server RSS, peak", max((mb for _, mb in samples), default=0), "MB")
    figures.add("server RSS growth after the warm-up", (last / base - 1) * 100 if base else 0, "%")
    print("RSS (s, MB): " + ", ".join(f"{t:.0f} {mb:.0f}" for t, mb in samples))
    if errors:
        print("first errors: " + "; ".join(errors[:5]))
    print(figures.report())


if __name__ == "__main__":
    main()
