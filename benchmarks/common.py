"""Shared helpers of the benchmarks: deterministic data, timing, peak memory, project set-up."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import shutil
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

WORK = Path(__file__).resolve().parent / ".work"
DAY_US = 86_400_000_000
END_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z: every generated event is before it


def fresh_dir(name: str) -> Path:
    path = WORK / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def write_project(folder: Path, definitions: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "headwater.toml").write_text(
        '[project]\nname = "bench"\ndefinitions = ["definitions.py"]\n'
    )
    (folder / "definitions.py").write_text(textwrap.dedent(definitions))
    return folder


def events_table(n: int, users: int, days: int, seed: int = 1) -> pa.Table:
    """``n`` purchase-like events, uniform over ``days`` days before END_US."""
    rng = np.random.default_rng(seed)
    ts = np.sort(END_US - rng.integers(1, days * DAY_US, n, dtype=np.int64))
    return pa.table(
        {
            "user_id": pa.array(rng.integers(0, users, n)).cast(pa.string()),
            "amount": np.round(rng.gamma(2.0, 30.0, n), 2),
            "status": pa.array(np.where(rng.random(n) < 0.9, "paid", "failed")),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        }
    )


def spine_table(n: int, users: int, days: int, seed: int = 2) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "user_id": pa.array(rng.integers(0, users, n)).cast(pa.string()),
            "timestamp": pa.array(
                END_US - rng.integers(0, days * DAY_US, n, dtype=np.int64),
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )


@contextmanager
def timed(label: str, results: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    results[label] = time.perf_counter() - start
    print(f"  {label}: {results[label]:.2f}s", flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.array(samples) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def repeat(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


async def _client(url: str, bodies: list[bytes], out: list[float], errors: list[int]) -> None:
    """One keep-alive HTTP/1.1 connection sending requests one after another.

    A minimal client on asyncio streams: a general-purpose client (httpx) costs more per
    request than the servers under test, and would measure itself.
    """
    host, port_path = url.split("://", 1)[1].split(":", 1)
    port, path = port_path.split("/", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Content-Length: "
    )
    try:
        for body in bodies:
            start = time.perf_counter()
            writer.write(f"{head}{len(body)}\r\n\r\n".encode() + body)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            out.append(time.perf_counter() - start)
            if b" 200 " not in status_line:
                errors.append(int(status_line.split()[1]))
    finally:
        writer.close()


def _worker(args: tuple[str, list[list[bytes]]]) -> tuple[list[float], int, float]:
    url, per_client = args
    latencies: list[float] = []
    errors: list[int] = []

    async def main() -> None:
        await asyncio.gather(*(_client(url, b, latencies, errors) for b in per_client))

    start = time.perf_counter()
    asyncio.run(main())
    return latencies, len(errors), time.perf_counter() - start


def load(url: str, bodies: list[dict], clients: int) -> dict[str, float]:
    """``clients`` concurrent clients (spread over 2 load processes) send ``bodies``."""
    encoded = [json.dumps(b).encode() for b in bodies]  # NaN as NaN: both servers parse it
    per_client = [encoded[i::clients] for i in range(clients)]
    procs = min(2, clients)
    groups = [(url, per_client[i::procs]) for i in range(procs)]
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        results = pool.map(_worker, groups)
    wall = max(r[2] for r in results)  # measured inside the load processes, after start-up
    latencies = np.array([x for r in results for x in r[0]]) * 1000
    return {
        "rps": len(latencies) / wall,
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "errors": float(sum(r[1] for r in results)),
    }
