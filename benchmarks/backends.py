"""Kafka + Redis: ingest and processing throughput with 1 and 2 workers, Redis lookups.

The same 12 windowed features as core.py (count, sum, mean over 1h/1d/7d/30d, filtered), on
a Kafka-protocol broker (Tansu, started here on loopback, in memory) with 4 partitions and a
Redis online store (127.0.0.1:6379, database 12, flushed first):
  ingest      SDK ingest of Arrow batches through the Kafka log (acks=all, idempotent)
  process x1  one processor catching up from the start (Project.process)
  process x2  the state cleared, then two worker processes sharing the partitions through a
              consumer group until caught up (`headwater process --forever --workers 2`)
  lookups     online features of 1 and 100 entities from Redis (in-process)
and, for reference, the embedded log's ingest and processing of the same events. The events
are generated once; each of ``--runs`` runs starts from a fresh project, an empty broker and a
flushed Redis database, and compares the 2 workers' values with the 1 worker's. Figures are
printed as min / median / max over the runs.

    python benchmarks/backends.py [--events 500000] [--users 50000] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis

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
    write_project,
)
from core import DEFINITIONS, FEATURES  # noqa: E402
from tests.kafka_broker import TansuBroker  # noqa: E402

from headwater import Project  # noqa: E402
from headwater.definitions.types import from_micros  # noqa: E402

REDIS = "redis://127.0.0.1:6379/12"


def ingest(project: Project, table: pa.Table, chunk: int = 20_000) -> float:
    start = time.perf_counter()
    for i in range(0, table.num_rows, chunk):
        result = project.ingest("purchases", table.slice(i, chunk))
        assert not result.rejected, result.rejected[:3]
    return time.perf_counter() - start


def caught_up(project: Project, events: int) -> bool:
    """Every feature set's checkpoints add up to every event (offsets are dense here); the
    broker's high watermark is not trusted (Tansu's lags by up to a batch)."""
    from headwater.log.base import partition_name

    log, store = project.log, project.online_store
    for plan in project.catalog.plans:
        parts = log.partitions(plan.stream.name)
        names = [partition_name(plan.id, n) for n in range(parts)]
        if sum(store.checkpoints(names).values()) < events:
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--lookups", type=int, default=2_000)
    ap.add_argument("--partitions", type=int, default=4)
    add_runs_argument(ap)
    args = ap.parse_args()
    figures = Figures(args.runs)
    # worker processes run on the real clock (they expire tiles by it): the events end now
    now = time.time_ns() // 1000
    shift = (now - END_US) // 86_400_000_000 * 86_400_000_000
    table = events_table(args.events, args.users, 30)
    ts = pc.add(table["ts"].cast(pa.int64()), shift).cast(pa.timestamp("us", tz="UTC"))
    table = table.set_column(table.schema.get_field_index("ts"), "ts", ts)
    broker = TansuBroker()
    for _ in figures.runs():
        work = fresh_dir("backends")
        embedded(work / "embedded", table, figures)
        broker.start()  # an empty broker each run: the topic holds this run's events only
        try:
            kafka_redis(work / "kafka", broker, table, args, figures)
        finally:
            broker.stop()

    figures.compare(
        "Kafka + Redis processing, 2 workers / 1 worker (events/s)",
        "Kafka + Redis: processing, 2 workers (incl. group join)",
        "Kafka + Redis: processing, 1 worker",
    )
    print(f"\n{args.events:,} events, {args.users:,} users, {args.partitions} partitions")
    print(figures.report())


def embedded(folder: Path, table: pa.Table, figures: Figures) -> None:
    with Project(write_project(folder, DEFINITIONS)) as p:
        figures.add("embedded log: SDK ingest", table.num_rows / ingest(p, table), "events/s")
        start = time.perf_counter()
        p.process()
        rate = table.num_rows / (time.perf_counter() - start)
        figures.add("embedded log: processing", rate, "events/s")


def kafka_redis(
    folder: Path, broker: TansuBroker, table: pa.Table, args: argparse.Namespace, figures: Figures
) -> None:
    """Ingest, 1 worker, lookups, then the same processing by 2 workers; values compared."""
    redis.Redis.from_url(REDIS).flushdb()
    write_project(folder, DEFINITIONS)
    toml = folder / "headwater.toml"
    toml.write_text(
        toml.read_text()
        + f'[stores]\nlog = "{broker.url(partitions=args.partitions)}"\n'
        + f'online = "{REDIS}"\n'
    )
    users = [str(u) for u in range(args.users)]
    with Project(folder) as p:
        figures.add("Kafka: SDK ingest", args.events / ingest(p, table), "events/s")
        start = time.perf_counter()
        p.process()
        rate = args.events / (time.perf_counter() - start)
        figures.add("Kafka + Redis: processing, 1 worker", rate, "events/s")
        lookups(p, users, args.lookups, figures)
        # Both results are read at one instant after every processing clock of this run (the
        # workers give up after 30 minutes): tiles expire by the real clock, so reading each
        # at its own "now" could put an hourly window edge between them.
        at = from_micros(time.time_ns() // 1000 + 3_600_000_000)
        values = p.online_features([{"user_id": u} for u in users[:200]], FEATURES, at=at)

        p.processor.clear()  # the same work again, shared by two worker processes
        stop = threading.Event()
        start = time.perf_counter()
        runner = threading.Thread(
            target=p.process, kwargs={"forever": True, "workers": 2, "stop": stop}
        )
        runner.start()
        time.sleep(1.0)
        deadline = time.monotonic() + 1800
        while not caught_up(p, args.events) and time.monotonic() < deadline:
            time.sleep(0.25)
        x2 = time.perf_counter() - start
        stop.set()
        runner.join(timeout=60)
        figures.add(
            "Kafka + Redis: processing, 2 workers (incl. group join)", args.events / x2, "events/s"
        )
        again = p.online_features([{"user_id": u} for u in users[:200]], FEATURES, at=at)
    differing = [(a, b) for a, b in zip(values, again, strict=True) if a != b]
    if differing:
        print(f"  first difference: 1 worker {differing[0][0]}\n  2 workers {differing[0][1]}")
    figures.add(
        "2 workers vs 1: entities with a differing value (of 200)", len(differing), "entities"
    )


def lookups(p: Project, users: list[str], count: int, figures: Figures) -> None:
    rng = np.random.default_rng(3)
    for batch, label in ((1, "1 entity"), (100, "100 entities")):
        samples = []
        for _ in range(count if batch == 1 else max(count // 10, 10)):
            ask = [{"user_id": u} for u in rng.choice(users, batch)]
            t = time.perf_counter()
            p.online_features(ask, FEATURES)
            samples.append(time.perf_counter() - t)
        p50, p99 = percentiles(samples)
        figures.add(f"Redis lookup, {label} x 12 features, p50", p50, "ms")
        figures.add(f"Redis lookup, {label} x 12 features, p99", p99, "ms")


if __name__ == "__main__":
    main()
