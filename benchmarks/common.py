"""Shared helpers of the benchmarks: deterministic data, timing, peak memory, project set-up."""

from __future__ import annotations

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
