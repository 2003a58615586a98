"""Replay between environments: events/s of `headwater replay` beside a bare copy of the log
(the ceiling), its peak memory, and the lag of `--follow` under a steady ingest.

The project (core.py's purchases stream and 12 features) declares the environments
``production`` and ``staging`` on the embedded stores. Set-up, once: ``--events``
purchases are ingested into production. Each of ``--runs`` runs then, into emptied targets:
  replay         `headwater replay --from production --to staging` in its own process
                 (ids, event times, per-key order, checkpoints after every batch);
                 events/s from its own summary, its peak RSS from the OS
  bare copy      every record read from production's log and appended as it is to a scratch
                 log (no parsing, no checkpoints): what the log itself allows
  follow lag     `headwater replay --follow` into staging (resuming where the replay ended)
                 running while this process ingests
                 ``--rate`` events/s for ``--follow-seconds``; the lag of a batch is the time
                 from its ingest's acknowledgement until the target's log holds it (p50, p99)
Figures are printed as min / median / max over the runs. Each run replays into an
environment of its own (``staging1``, ``staging2``, ...), empty when it starts.

With ``--kafka`` the log of both environments is a Kafka-protocol broker (Tansu, started here
on loopback, in memory, ``--partitions`` per topic), each environment in its namespace (topics
``bench_production.purchases``, ``bench_staging1.purchases``); the bare copy appends to topics
of a scratch prefix through the same Kafka log, and the follow lag is read from the target
topic's end offsets. The other stores stay embedded.

    python benchmarks/replay.py [--events 10000000] [--runs 3]
    python benchmarks/replay.py --kafka [--events 1000000] [--partitions 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import (  # noqa: E402
    END_US,
    Figures,
    add_runs_argument,
    events_table,
    fresh_dir,
    percentiles,
)
from core import DEFINITIONS  # noqa: E402

from headwater import Project  # noqa: E402
from headwater.log.base import Log, NewRecord  # noqa: E402
from headwater.log.embedded import EmbeddedLog  # noqa: E402
from headwater.log.urls import open_log  # noqa: E402

CONFIG = """[project]
name = "bench"
definitions = ["definitions.py"]

[environments.production]
"""
_RATE = re.compile(r"copied (\d+) events in [\d.]+s \(([\d,]+) events/s\)")


def _clock() -> int:
    return END_US


def _project(folder: Path, runs: int, log: str | None) -> Path:
    """production, and a target environment per run; every one on the log at ``log`` (in its
    namespace there) where given, else on the embedded stores."""
    folder.mkdir(parents=True, exist_ok=True)
    targets = "".join(f"[environments.{_target(run)}]\n" for run in range(1, runs + 1))
    stores = f'[stores]\nlog = "{log}"\n' if log else ""
    (folder / "headwater.toml").write_text(CONFIG + targets + stores)
    (folder / "definitions.py").write_text(DEFINITIONS)
    return folder


def _target(run: int) -> str:
    return f"staging{run}"


# `headwater replay ...`, printing its own peak RSS on stderr when it ends: VmHWM, the high
# water mark of this program's memory (ru_maxrss would count the parent's pages at the fork)
_WRAPPER = """
import re, sys
from headwater.cli import main
sys.argv = ["headwater", *sys.argv[1:]]
try:
    main()
finally:
    status = open("/proc/self/status").read()
    print("peak_rss_kb", re.search(r"VmHWM:\\s+(\\d+)", status).group(1), file=sys.stderr)
"""


def _cli(folder: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRAPPER, "replay", *args, "-p", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def replay(folder: Path, run: int, events: int, figures: Figures) -> None:
    proc = _cli(folder, "--from", "production", "--to", _target(run))
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(out + err)
    found = _RATE.search(out)
    assert found is not None and int(found.group(1)) == events, out
    figures.add("replay: events/s", int(found.group(2).replace(",", "")), "events/s")
    peak = re.search(r"peak_rss_kb (\d+)", err)
    assert peak is not None, err
    figures.add("replay: peak RSS", int(peak.group(1)) // 1024, "MB")


def bare_copy(source: Project, folder: Path, run: int, kafka: str | None, figures: Figures) -> None:
    target: Log
    if kafka:
        target = open_log(f"{kafka}&prefix=bare{run}.", folder)
    else:
        target_path = folder / "bare.db"
        target_path.unlink(missing_ok=True)
        target = EmbeddedLog(target_path)
    start = time.perf_counter()
    copied = 0
    for partition in range(source.log.partitions("purchases")):
        offset = 0
        while batch := source.log.read("purchases", offset, 5000, partition):
            records = [NewRecord(r.event_id, r.event_time, r.payload) for r in batch]
            target.append("purchases", records, END_US)
            copied += len(records)
            offset = batch[-1].offset + 1
    figures.add(
        "bare copy of the log: events/s", copied / (time.perf_counter() - start), "events/s"
    )
    target.close()


def follow(
    folder: Path, source: Project, run: int, args: argparse.Namespace, figures: Figures
) -> None:
    """Follow into this run's target, which its replay filled: it resumes from its
    checkpoints, caught up at once, as one follows after a first replay."""
    base = _end(source)
    proc = _cli(folder, "--from", "production", "--to", _target(run), "--follow")
    lags: list[float] = []
    with Project(folder, env=_target(run), clock=_clock) as target:
        try:
            deadline = time.monotonic() + 600
            while _end(target) < base and time.monotonic() < deadline:
                time.sleep(0.05)  # caught up with what production held
            chunk = max(1, args.rate // 10)
            table = events_table(int(args.rate * args.follow_seconds), 1000, 1, seed=9)
            pending: list[tuple[int, float]] = []
            total = base
            step_start = time.perf_counter()
            for i in range(0, table.num_rows, chunk):
                source.ingest("purchases", table.slice(i, chunk))
                total += min(chunk, table.num_rows - i)
                pending.append((total, time.perf_counter()))
                held = _end(target)
                while pending and pending[0][0] <= held:
                    lags.append(time.perf_counter() - pending.pop(0)[1])
                step_start += 0.1
                time.sleep(max(0.0, step_start - time.perf_counter()))
            deadline = time.monotonic() + 60
            while pending and time.monotonic() < deadline:
                held = _end(target)
                while pending and pending[0][0] <= held:
                    lags.append(time.perf_counter() - pending.pop(0)[1])
                time.sleep(0.005)
            assert not pending, "the follower did not catch up within 60 s"
        finally:
            proc.terminate()
            proc.communicate(timeout=60)
    p50, p99 = percentiles(lags)
    figures.add("follow: lag p50", p50, "ms")
    figures.add("follow: lag p99", p99, "ms")


def _end(project: Project) -> int:
    """The purchases held, over every partition."""
    log = project.log
    return sum(log.end_offset("purchases", p) for p in range(log.partitions("purchases")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, help="10,000,000 (1,000,000 with --kafka)")
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--rate", type=int, default=2000, help="events/s ingested while following")
    ap.add_argument("--follow-seconds", type=float, default=10.0)
    ap.add_argument("--kafka", action="store_true", help="the log on a Kafka-protocol broker")
    ap.add_argument("--partitions", type=int, default=4, help="per topic, with --kafka")
    add_runs_argument(ap)
    args = ap.parse_args()
    args.events = args.events or (1_000_000 if args.kafka else 10_000_000)
    os.environ.pop("HEADWATER_ENV", None)
    broker = None
    if args.kafka:
        from tests.kafka_broker import TansuBroker

        broker = TansuBroker()
        broker.start()
    try:
        figures = run(args, None if broker is None else broker.url(partitions=args.partitions))
    finally:
        if broker is not None:
            broker.stop()
    print(
        f"\n{args.events:,} events, {args.users:,} users; follow at {args.rate:,} events/s; "
        + (f"Kafka log (Tansu), {args.partitions} partitions" if args.kafka else "embedded log")
    )
    print(figures.report())


def run(args: argparse.Namespace, kafka: str | None) -> Figures:
    figures = Figures(args.runs)
    work = fresh_dir("replay")
    folder = _project(work / "shop", args.runs, kafka)
    with Project(folder, env="production", clock=_clock) as source:
        start = time.perf_counter()
        table = events_table(args.events, args.users, 30)
        for i in range(0, table.num_rows, 100_000):
            result = source.ingest("purchases", table.slice(i, 100_000))
            assert not result.rejected, result.rejected[:3]
        print(f"set-up: {args.events:,} events ingested in {time.perf_counter() - start:.1f}s")
        for n in figures.runs():
            replay(folder, n, _end(source), figures)
            bare_copy(source, work, n, kafka, figures)
            follow(folder, source, n, args, figures)
    figures.compare(
        "replay / bare copy of the log (events/s)",
        "replay: events/s",
        "bare copy of the log: events/s",
    )
    return figures


if __name__ == "__main__":
    main()
