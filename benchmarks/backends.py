"""Kafka + Redis: ingest and processing throughput with 1 and 2 workers, Redis lookups.

The same 12 windowed features as core.py (count, sum, mean over 1h/1d/7d/30d, filtered), on
a Kafka-protocol broker (Tansu, started here on loopback, in memory) with 4 partitions and a
Redis online store (127.0.0.1:6379, database 12, flushed first):
  ingest      SDK ingest of Arrow batches through the Kafka log (acks=all, idempotent)
  process x1  one processor catching up from the start (Project.process)
  process x2  the state cleared, then two worker processes sharing the partitions through a
              consumer group until caught up (`headwater process --forever --workers 2`)
  lookups     online features of 1 and 100 entities from Redis (in-process)
and, for reference, the embedded log's ingest and processing of the same events.

    python benchmarks/backends.py [--events 500000] [--users 50000]
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
from common import END_US, events_table, fresh_dir, write_project  # noqa: E402
from core import DEFINITIONS, FEATURES  # noqa: E402
from tests.kafka_broker import TansuBroker  # noqa: E402

from headwater import Project  # noqa: E402

REDIS = "redis://127.0.0.1:6379/12"


def percentiles(samples: list[float]) -> str:
    ms = np.array(samples) * 1000
    return f"{np.percentile(ms, 50):.2f} / {np.percentile(ms, 99):.2f}"


def ingest(project: Project, table, chunk: int = 20_000) -> float:
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
    args = ap.parse_args()
    # worker processes run on the real clock (they expire tiles by it): the events end now
    now = time.time_ns() // 1000
    shift = (now - END_US) // 86_400_000_000 * 86_400_000_000
    table = events_table(args.events, args.users, 30)
    ts = pc.add(table["ts"].cast(pa.int64()), shift).cast(pa.timestamp("us", tz="UTC"))
    table = table.set_column(table.schema.get_field_index("ts"), "ts", ts)
    users = [str(u) for u in range(args.users)]
    rows: dict[str, str] = {}
    work = fresh_dir("backends")

    embedded = write_project(work / "embedded", DEFINITIONS)
    with Project(embedded) as p:
        seconds = ingest(p, table)
        rows["embedded log: SDK ingest"] = f"{args.events / seconds:,.0f} events/s"
        start = time.perf_counter()
        p.process()
        rows["embedded log: processing"] = (
            f"{args.events / (time.perf_counter() - start):,.0f} events/s"
        )

    redis.Redis.from_url(REDIS).flushdb()
    broker = TansuBroker().start()
    try:
        folder = write_project(work / "kafka", DEFINITIONS)
        toml = folder / "headwater.toml"
        toml.write_text(
            toml.read_text()
            + f'[stores]\nlog = "{broker.url(partitions=args.partitions)}"\n'
            + f'online = "{REDIS}"\n'
        )
        with Project(folder) as p:
            seconds = ingest(p, table)
            rows["Kafka: SDK ingest"] = f"{args.events / seconds:,.0f} events/s"
            start = time.perf_counter()
            p.process()
            x1 = time.perf_counter() - start
            rows["Kafka + Redis: processing, 1 worker"] = f"{args.events / x1:,.0f} events/s"

            rng = np.random.default_rng(3)
            for batch, label in ((1, "1 entity"), (100, "100 entities")):
                samples = []
                for _ in range(args.lookups if batch == 1 else max(args.lookups // 10, 10)):
                    ask = [{"user_id": u} for u in rng.choice(users, batch)]
                    t = time.perf_counter()
                    p.online_features(ask, FEATURES)
                    samples.append(time.perf_counter() - t)
                rows[f"Redis lookup, {label} x 12 features (p50 / p99 ms)"] = percentiles(samples)
            values = p.online_features([{"user_id": u} for u in users[:200]], FEATURES)

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
            rows["Kafka + Redis: processing, 2 workers (incl. group join)"] = (
                f"{args.events / x2:,.0f} events/s"
            )
            again = p.online_features([{"user_id": u} for u in users[:200]], FEATURES)
            same = sum(a == b for a, b in zip(values, again, strict=True))
            if same < len(values):
                diff = next((a, b) for a, b in zip(values, again, strict=True) if a != b)
                print(f"  first difference: 1 worker {diff[0]}\n  2 workers {diff[1]}")
            rows["2 workers vs 1: identical entities (of 200)"] = str(same)
    finally:
        broker.stop()

    print(f"\n{args.events:,} events, {args.users:,} users, {args.partitions} partitions\n")
    print("| measure | result |")
    print("| --- | --- |")
    for name, value in rows.items():
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
