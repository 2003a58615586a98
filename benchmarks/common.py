"""Shared helpers of the benchmarks: deterministic data, figures over runs, peak memory, load."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import numbers
import os
import resource
import secrets
import shutil
import statistics
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

WORK = Path(__file__).resolve().parent / ".work"
# The shop's emails are PII: its projects pseudonymize them under a secret (one per run; the
# servers and workers the benchmarks start inherit it).
os.environ.setdefault("HEADWATER_PII_SECRET", secrets.token_hex(32))
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


def archive_and_sort(project: Any, stream_name: str) -> tuple[float, float]:
    """Seconds to archive a stream's log to Parquet, then to sort it into the sorted copy:
    the two steps of the archiver's ``catch_up``, timed apart (set-up figures)."""
    from headwater.history.archiver import Archiver
    from headwater.history.engines.sorted_history import refresh

    stream = project.definitions.streams[stream_name]
    start = time.perf_counter()
    Archiver(project.log, project.offline_store, sorted_history=False).catch_up(stream)
    archived = time.perf_counter()
    refresh(project.offline_store, stream, {0: project.offline_store.committed(stream_name)})
    return archived - start, time.perf_counter() - archived


def add_runs_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="measured runs on the same data (set-up happens once); min / median / max printed",
    )


class Figures:
    """The figures of a benchmark, each recorded once per run, printed as min / median / max.

    Comparisons are ratios of medians, so that one slow run of either side does not make the
    ratio.

    >>> figures = Figures(runs=3)
    >>> for run in figures.runs():
    ...     figures.add("join, headwater", [1.0, 2.0, 4.0][run - 1], "s")
    ...     figures.add("join, Feast", [9.0, 6.0, 7.0][run - 1], "s")
    run 1 of 3
    run 2 of 3
    run 3 of 3
    >>> figures.compare("Feast / headwater (join s)", "join, Feast", "join, headwater")
    >>> print(figures.report())
    <BLANKLINE>
    3 runs on the same data:
    | figure | min | median | max | unit |
    | --- | --- | --- | --- | --- |
    | join, headwater | 1.00 | 2.00 | 4.00 | s |
    | join, Feast | 6.00 | 7.00 | 9.00 | s |
    <BLANKLINE>
    | ratio of medians | value |
    | --- | --- |
    | Feast / headwater (join s) | 3.50x |
    """

    def __init__(self, runs: int) -> None:
        if runs < 1:
            raise ValueError(f"--runs must be at least 1, got {runs}")
        self.count = runs
        self._samples: dict[str, list[float]] = {}
        self._units: dict[str, str] = {}
        self._counts: set[str] = set()  # figures that count things: printed as whole numbers
        self._ratios: list[tuple[str, str, str]] = []

    def runs(self, part: str = "") -> Iterator[int]:
        """1, 2, ... N, announcing each run (of ``part`` of the benchmark, if given)."""
        for run in range(1, self.count + 1):
            print(f"run {run} of {self.count}" + (f": {part}" if part else ""), flush=True)
            yield run

    def add(self, name: str, value: float, unit: str) -> None:
        """Record this run's ``value`` of figure ``name``. An ``int`` value makes the figure a
        count, printed without decimals."""
        if self._units.setdefault(name, unit) != unit:
            raise ValueError(f"figure {name!r} is in {self._units[name]}, not {unit}")
        samples = self._samples.setdefault(name, [])
        if len(samples) == self.count:
            raise ValueError(f"figure {name!r} was recorded more than once per run")
        if isinstance(value, numbers.Integral):
            self._counts.add(name)
        samples.append(float(value))

    def median(self, name: str) -> float:
        return statistics.median(self._samples[name])

    def compare(self, label: str, numerator: str, denominator: str) -> None:
        """Print the ratio of two figures' medians under ``label``."""
        self._ratios.append((label, numerator, denominator))

    def report(self) -> str:
        """The markdown tables: every figure, then every ratio; each figure recorded N times."""
        lines = [f"\n{self.count} run{'s' * (self.count > 1)} on the same data:"]
        lines += ["| figure | min | median | max | unit |", "| --- | --- | --- | --- | --- |"]
        for name, samples in self._samples.items():
            if len(samples) != self.count:
                raise ValueError(f"figure {name!r} has {len(samples)} runs of {self.count}")
            values = (min(samples), statistics.median(samples), max(samples))
            shown = " | ".join(_number(v, name in self._counts) for v in values)
            lines.append(f"| {name} | {shown} | {self._units[name]} |")
        if self._ratios:
            lines += ["", "| ratio of medians | value |", "| --- | --- |"]
            for label, numerator, denominator in self._ratios:
                ratio = self.median(numerator) / self.median(denominator)
                lines.append(f"| {label} | {_number(ratio, False)}x |")
        return "\n".join(lines)


def _number(value: float, count: bool) -> str:
    """About three significant digits, thousands separated; counts as whole numbers."""
    if count and value.is_integer():
        return f"{value:,.0f}"
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if size >= 10 else f"{value:.2f}" if size >= 1 else f"{value:.3f}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_tree(pid: int) -> list[int]:
    """Process ``pid`` and every live descendant, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue  # gone meanwhile
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by process ``pid`` and its live descendants: a
    server's own work, whatever its workers or helpers (in clock ticks of 10 ms)."""
    total = 0.0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def tree_rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` and its live descendants."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status") as f:
                rss = [line.split()[1] for line in f if line.startswith("VmRSS:")]
        except OSError:
            continue
        total += int(rss[0]) if rss else 0  # a zombie has none
    return total / 1024


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


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: str, body: bytes
) -> tuple[bytes, bytes]:
    """One request on a keep-alive HTTP/1.1 connection (``head`` ends with "Content-Length:
    "): the answer's status line and body."""
    writer.write(f"{head}{len(body)}\r\n\r\n".encode() + body)
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status_line, await reader.readexactly(length)


async def _client(
    url: str,
    bodies: list[bytes],
    out: list[float],
    errors: list[int],
    headers: Mapping[str, str] | None = None,
) -> None:
    """One keep-alive HTTP/1.1 connection sending requests one after another.

    A minimal client on asyncio streams: a general-purpose client (httpx) costs more per
    request than the servers under test, and would measure itself.
    """
    host, port_path = url.split("://", 1)[1].split(":", 1)
    port, path = port_path.split("/", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: "
    )
    try:
        for body in bodies:
            start = time.perf_counter()
            status_line, _ = await exchange(reader, writer, head, body)
            out.append(time.perf_counter() - start)
            if b" 200 " not in status_line:
                errors.append(int(status_line.split()[1]))
    finally:
        writer.close()


def _worker(
    args: tuple[str, list[list[bytes]], Mapping[str, str] | None],
) -> tuple[list[float], int, float]:
    url, per_client, headers = args
    latencies: list[float] = []
    errors: list[int] = []

    async def main() -> None:
        await asyncio.gather(*(_client(url, b, latencies, errors, headers) for b in per_client))

    start = _started()
    asyncio.run(main())
    return latencies, len(errors), time.perf_counter() - start


# The load processes start sending together, once both have started (spawning one takes up
# to a second): otherwise the first to start runs alone for a while, and a level lasting half
# a second on a fast machine was timed mostly alone (±40% from run to run).
_START: Any = None


def _pool(procs: int) -> Any:
    context = multiprocessing.get_context("spawn")
    return context.Pool(procs, initializer=_keep_barrier, initargs=(context.Barrier(procs),))


def _keep_barrier(barrier: Any) -> None:
    global _START
    _START = barrier


def _started() -> float:
    """Wait for the other load process; the time both start at."""
    _START.wait()
    return time.perf_counter()


def load(
    url: str,
    bodies: Sequence[object],
    clients: int,
    headers: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """``clients`` concurrent clients (spread over 2 load processes) send ``bodies``, each
    request with ``headers`` (an API key, say)."""
    encoded = [json.dumps(b).encode() for b in bodies]  # NaN as NaN: both servers parse it
    per_client = [encoded[i::clients] for i in range(clients)]
    procs = min(2, clients)
    groups = [(url, per_client[i::procs], headers) for i in range(procs)]
    with _pool(procs) as pool:
        results = pool.map(_worker, groups)
    wall = max(r[2] for r in results)  # measured inside the load processes, after start-up
    latencies = np.array([x for r in results for x in r[0]]) * 1000
    return {
        "rps": len(latencies) / wall,
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "errors": float(sum(r[1] for r in results)),
    }


async def _grpc_client(
    target: str, method: str, bodies: list[bytes], out: list[float], errors: list[int]
) -> None:
    """One gRPC channel sending serialized requests one after another (no protobuf work in
    the client: the bytes go as they are, the answer is not parsed)."""
    import grpc

    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        for body in bodies:
            start = time.perf_counter()
            try:
                await call(body)
            except grpc.aio.AioRpcError as exc:
                errors.append(exc.code().value[0])
            out.append(time.perf_counter() - start)


def _grpc_worker(
    args: tuple[str, str, list[list[bytes]]],
) -> tuple[list[float], int, float]:
    target, method, per_client = args
    latencies: list[float] = []
    errors: list[int] = []

    async def main() -> None:
        await asyncio.gather(
            *(_grpc_client(target, method, b, latencies, errors) for b in per_client)
        )

    start = _started()
    asyncio.run(main())
    return latencies, len(errors), time.perf_counter() - start


def grpc_load(target: str, method: str, bodies: Sequence[bytes], clients: int) -> dict[str, float]:
    """``clients`` concurrent gRPC clients (over 2 load processes) call ``method`` (e.g.
    ``/inference.GRPCInferenceService/ModelInfer``) with the serialized ``bodies``."""
    per_client = [list(bodies[i::clients]) for i in range(clients)]
    procs = min(2, clients)
    groups = [(target, method, per_client[i::procs]) for i in range(procs)]
    with _pool(procs) as pool:
        results = pool.map(_grpc_worker, groups)
    wall = max(r[2] for r in results)
    latencies = np.array([x for r in results for x in r[0]]) * 1000
    return {
        "rps": len(latencies) / wall,
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "errors": float(sum(r[1] for r in results)),
    }
