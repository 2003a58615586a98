"""Stream processing: windowed aggregation from a Kafka-protocol broker, headwater vs Quix Streams.

The same events for every system, generated here: (user_id, amount, ts), uniform over
``--days`` days before 2026-01-01, at millisecond resolution, in time order. The aggregation:
per user, the sum of ``amount`` and the count of events over a 1h tumbling window and over a
1d window hopping by 1h. A Tansu broker (in memory, on loopback) holds two topics of
``--partitions`` partitions with the same events, keyed by user_id (murmur2, as Kafka's Java
clients partition): headwater's (written by its Kafka log adapter, which adds its own
headers) and a plain one of JSON values for Quix Streams. Producing them is not timed in the
table; the time of each is printed. Timed, each from its start until every event is
processed:

  headwater      ``Project.process()`` from the Kafka log into the embedded SQLite online
                 store, into Redis (``--redis``: database 15, flushed first), and from the
                 embedded SQLite log: one process, one tile of [sum, count] per user and
                 hour, checkpoints committed with the state; it returns once a read of
                 every partition finds nothing left
  Quix Streams   an Application (the latest release, in its own virtual environment under
                 benchmarks/.work/quix-venv) on the plain topic, in a new consumer group:
                 ``tumbling_window(1h)`` and ``hopping_window(1d, 1h)``, each
                 ``.agg(spend=Sum("amount"), orders=Count()).current()``, on its default
                 RocksDB state with changelog topics (``--quix-no-changelog`` adds a run
                 without them); a callback counts the input messages and calls
                 ``app.stop()`` at the last one, so the time includes the group join and
                 the final checkpoint
  bare loop      the same tile updates (a dict per user of [sum, count] per hour) in a plain
                 Python loop over in-memory lists: the practical single-process limit; and
                 the same loop fed by a consumer of the plain topic (JSON decoded). Each
                 twice: as Python runs it by default, and with its cyclic garbage collector
                 off (``gc.disable()``), as headwater's processor applies a batch: over
                 1M events the collector's passes are more than half the default loop's
                 time

The values of a sample of users are compared between all systems: the 1h window ending at
each of the last 24 hours and the 1d window ending at 2026-01-01. There headwater's window
(``start <= ts < t``, the start hop-aligned) and Quix's ``[start, end)`` are the same events;
every event of a user is in time order, so Quix drops none as late (the count is printed).

The events, the topics, the embedded log and Quix's venv are set up once; each of ``--runs``
runs then times every system again (headwater's state cleared, Quix in a new consumer group)
and compares its values with the reference's of the same run. Figures are printed as
min / median / max over the runs.

    python benchmarks/streams.py                                # 1M events, 100k users
    python benchmarks/streams.py --events 20000 --users 2000    # a quick run
    python benchmarks/streams.py --no-quix --no-redis           # headwater and the bare loop
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import (  # noqa: E402
    DAY_US,
    END_US,
    WORK,
    Figures,
    add_runs_argument,
    fresh_dir,
    write_project,
)
from tests.kafka_broker import TansuBroker  # noqa: E402

from headwater import Project  # noqa: E402
from headwater.definitions.types import from_micros  # noqa: E402

HOUR_US = 3_600_000_000
QUIX_VENV = WORK / "quix-venv"
REDIS = "redis://127.0.0.1:6379/15"  # the benchmark's own database: flushed before use
STREAM, PLAIN_TOPIC = "events", "events-plain"
FEATURES = ["spend_1h", "orders_1h", "spend_1d", "orders_1d"]
REFERENCE = "headwater, Kafka log -> SQLite"  # the system every other is compared with
# Every window value compared: (user, window, end) -> (sum, count)
Values = dict[tuple[str, str, int], tuple[float, int]]
Extra = tuple[str, float, str]  # a system's own figure of a run: (name, value, unit)
# One run of a system: its seconds, its values and its own figures
System = Callable[[int], tuple[float, Values, list[Extra]]]

DEFINITIONS = """
from headwater import Entity, Feature, Stream, agg

user = Entity("user", keys="user_id", owner="bench", description="A user")
events = Stream(
    "events", fields={"user_id": "string", "amount": "float", "ts": "timestamp"},
    key="user_id", time="ts", required=["user_id", "amount"], owner="bench",
    description="Spending events",
)
W = ["1h", "1d"]  # hop 1h for both: the 1h window tumbles, the 1d window hops by 1h
features = [
    Feature("spend", entity=user, stream=events, aggregation=agg.sum("amount"), windows=W,
            hop="1h", owner="bench", description="Spend"),
    Feature("orders", entity=user, stream=events, aggregation=agg.count(), windows=W,
            hop="1h", owner="bench", description="Events"),
]
"""

QUIX_RUN = """
import json, sys, time
from datetime import timedelta

from quixstreams import Application
from quixstreams.dataframe.windows import Count, Sum

bootstrap, topic_name, group, state_dir, changelog, total, sample_file = sys.argv[1:8]
total = int(total)
sample = set(json.load(open(sample_file)))
app = Application(
    broker_address=bootstrap,
    consumer_group=group,
    auto_offset_reset="earliest",
    state_dir=state_dir,
    use_changelog_topics=changelog == "on",
    consumer_extra_config={"fetch.queue.backoff.ms": 0, "session.timeout.ms": 6000},
    loglevel="WARNING",
)
topic = app.topic(topic_name, key_deserializer="str", value_deserializer="json")
progress = {"n": 0, "first": 0.0, "last": 0.0}


def seen(value):
    progress["n"] += 1
    if progress["n"] == 1:
        progress["first"] = time.perf_counter()
    if progress["n"] == total:
        progress["last"] = time.perf_counter()
        app.stop()  # the loop ends after this message: every branch still processes it


windows = {"1h": {}, "1d": {}}


def keep(name):
    out = windows[name]

    def record(value, key, timestamp, headers):
        if key in sample:  # the latest value of each window of the sampled users
            out[f"{key}|{value['end']}"] = [value["spend"], value["orders"]]

    return record


sdf = app.dataframe(topic).update(seen)
hourly = sdf.tumbling_window(timedelta(hours=1))
hourly.agg(spend=Sum("amount"), orders=Count()).current().update(keep("1h"), metadata=True)
daily = sdf.hopping_window(timedelta(days=1), timedelta(hours=1))
daily.agg(spend=Sum("amount"), orders=Count()).current().update(keep("1d"), metadata=True)
start = time.perf_counter()
app.run()
end = time.perf_counter()
print(json.dumps({
    "seconds": end - start,
    "first_to_last": progress["last"] - progress["first"],
    "join": progress["first"] - start,
    "events": progress["n"],
    "windows": windows,
}))
"""


# -- data ------------------------------------------------------------------------------------


def generate(n: int, users: int, days: int, seed: int = 11) -> pa.Table:
    """``n`` events uniform over ``days`` days before END_US, in time order, whole ms."""
    rng = np.random.default_rng(seed)
    ts = np.sort(END_US - rng.integers(1, days * DAY_US // 1000, n, dtype=np.int64) * 1000)
    return pa.table(
        {
            "user_id": pa.array(rng.integers(0, users, n)).cast(pa.string()),
            "amount": np.round(rng.gamma(2.0, 30.0, n), 2),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        }
    )


def columns(table: pa.Table) -> tuple[list[str], list[float], list[int]]:
    return (
        table["user_id"].to_pylist(),
        table["amount"].to_pylist(),
        table["ts"].cast(pa.int64()).to_pylist(),
    )


def choose_sample(table: pa.Table, size: int) -> list[str]:
    """Users with events in the last day (their windows are not empty), and a few others."""
    users, _, ts = columns(table)
    recent = sorted({u for u, t in zip(users, ts, strict=True) if t >= END_US - DAY_US}, key=int)
    rng = np.random.default_rng(5)
    picked = [str(u) for u in rng.permutation(recent)[: size * 3 // 4]] if recent else []
    others = sorted(set(users) - set(picked), key=int)
    picked += [str(u) for u in rng.permutation(others)[: size - len(picked)]] if others else []
    return sorted(picked, key=int)


def instants() -> list[tuple[str, int]]:
    """(window, end) of every window compared: 1h ending at each of the last 24 hours, 1d
    ending at END_US."""
    return [("1h", END_US - i * HOUR_US) for i in range(24)] + [("1d", END_US)]


# -- producing -------------------------------------------------------------------------------


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """A topic that keeps its records: event times are in the past, and a broker that
    applies time retention would drop them."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([NewTopic(topic, partitions, config={"retention.ms": "-1"})])
    future[topic].result(30)
    deadline = time.monotonic() + 30
    while topic not in admin.list_topics(timeout=10).topics:
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic!r} was created but is not visible")
        time.sleep(0.05)


def produce_plain(bootstrap: str, table: pa.Table) -> float:
    """The events as JSON values keyed by user_id, timestamped with their event time."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",  # as headwater's log: the same partitions
            "linger.ms": 20,
            "enable.idempotence": True,
            "acks": "all",
        }
    )
    start = time.perf_counter()
    for user, amount, ts in zip(*columns(table), strict=True):
        value = orjson.dumps({"user_id": user, "amount": amount, "ts": ts})
        while True:
            try:
                producer.produce(PLAIN_TOPIC, value, user.encode(), timestamp=ts // 1000)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("the plain topic's producer did not deliver every event")
    return time.perf_counter() - start


# -- headwater -------------------------------------------------------------------------------


def headwater_project(folder: Path, stores: dict[str, str]) -> Path:
    write_project(folder, DEFINITIONS)
    toml = folder / "headwater.toml"
    if stores:
        lines = "".join(f'{k} = "{v}"\n' for k, v in stores.items())
        toml.write_text(toml.read_text() + "[stores]\n" + lines)
    return folder


def headwater_ingest(folder: Path, table: pa.Table, chunk: int = 20_000) -> float:
    with Project(folder, clock=lambda: END_US) as p:
        start = time.perf_counter()
        for i in range(0, table.num_rows, chunk):
            result = p.ingest(STREAM, table.slice(i, chunk))
            if result.rejected:
                raise RuntimeError(f"events rejected: {result.rejected[:3]}")
        return time.perf_counter() - start


def headwater_process(folder: Path, events: int, sample: list[str]) -> tuple[float, Values]:
    """Seconds until ``Project.process()`` caught up, and the sampled users' values."""
    with Project(folder, clock=lambda: END_US) as p:
        p.processor.clear()  # every run replays the whole log into an empty state
        start = time.perf_counter()
        stats = p.process()
        seconds = time.perf_counter() - start
        if stats.events != events:
            raise RuntimeError(f"headwater processed {stats.events:,} events, not {events:,}")
        rows = [{"user_id": u} for u in sample]
        values: Values = {}
        for window, end in instants():
            names = [f"spend_{window}", f"orders_{window}"]
            got = p.online_features(rows, names, at=from_micros(end))
            for user, row in zip(sample, got, strict=True):
                values[user, window, end] = (row[names[0]] or 0.0, row[names[1]] or 0)
    return seconds, values


# -- Quix Streams -----------------------------------------------------------------------------


def quix_python() -> Path:
    python = QUIX_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
        subprocess.run(
            [str(QUIX_VENV / "bin" / "pip"), "install", "-q", "--upgrade", "quixstreams"],
            check=True,
        )
    return python


def quix_version(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import quixstreams; print(quixstreams.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def run_quix(
    python: Path,
    bootstrap: str,
    work: Path,
    events: int,
    sample: list[str],
    changelog: bool,
    run: int,
) -> tuple[dict[str, float], Values]:
    """One run in a new consumer group, with a new state folder (both removed afterwards)."""
    name = f"quix-{'changelog' if changelog else 'local'}-{run}"
    script, sample_file = work / "quix_run.py", work / "sample.json"
    script.write_text(QUIX_RUN)
    sample_file.write_text(json.dumps(sample))
    cmd = [str(python), str(script), bootstrap, PLAIN_TOPIC, f"bench-{name}"]
    cmd += [str(work / name), "on" if changelog else "off", str(events), str(sample_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    drop_topics(bootstrap, f"bench-{name}")
    shutil.rmtree(work / name, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"Quix Streams failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["late"] = (proc.stdout + proc.stderr).count("Skipping window processing")  # logged
    if out["events"] != events:
        raise RuntimeError(f"Quix Streams processed {out['events']:,} events, not {events:,}")
    found: dict[tuple[str, str, int], tuple[float, int]] = {}
    for window, latest in out["windows"].items():
        for key, (total, count) in latest.items():
            user, end = key.split("|")
            found[user, window, int(end) * 1000] = (total, count)
    values = {
        (u, w, end): found.get((u, w, end), (0.0, 0)) for u in sample for w, end in instants()
    }
    return out, values


def drop_topics(bootstrap: str, group: str) -> None:
    """Delete the topics Quix Streams made for a consumer group (its changelogs): they would
    keep a finished run's state in the broker's memory."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if group in t]
    if names:
        for future in admin.delete_topics(names).values():
            future.result(30)


def quix_system(
    python: Path, bootstrap: str, work: Path, events: int, sample: list[str], changelog: bool
) -> System:
    def measure(run: int) -> tuple[float, Values, list[Extra]]:
        out, values = run_quix(python, bootstrap, work, events, sample, changelog, run)
        extras = [
            ("first message after start (group join)", out["join"], "s"),
            ("first to last message", events / out["first_to_last"], "events/s"),
            ("late events skipped", int(out["late"]), "events"),
        ]
        return out["seconds"], values, extras

    return measure


# -- the bare loop ----------------------------------------------------------------------------


def bare_loop(users: list[str], amounts: list[float], ts: list[int]) -> tuple[float, dict]:
    """The tile updates alone: per user, per hour, [sum, count]."""
    tiles: dict[str, dict[int, list[Any]]] = {}
    start = time.perf_counter()
    for user, amount, t in zip(users, amounts, ts, strict=True):
        hours = tiles.get(user)
        if hours is None:
            hours = tiles[user] = {}
        hour = t - t % HOUR_US
        tile = hours.get(hour)
        if tile is None:
            hours[hour] = [amount, 1]
        else:
            tile[0] += amount
            tile[1] += 1
    return time.perf_counter() - start, tiles


def bare_kafka_loop(bootstrap: str, partitions: int, events: int) -> tuple[float, dict]:
    """The same loop fed by a consumer of the plain topic, JSON values decoded."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-bare",  # never joined: partitions assigned by hand
            "enable.auto.commit": False,
            "fetch.queue.backoff.ms": 0,
            "session.timeout.ms": 6000,
        }
    )
    tiles: dict[str, dict[int, list[Any]]] = {}
    seen = 0
    start = time.perf_counter()
    consumer.assign([TopicPartition(PLAIN_TOPIC, p, 0) for p in range(partitions)])
    while seen < events:
        batch = consumer.consume(10_000, timeout=0.1)
        if not batch and time.perf_counter() - start > 600:
            raise RuntimeError(f"the plain topic gave {seen:,} events of {events:,}")
        for message in batch:
            if message.error() is not None:
                raise RuntimeError(f"consumer: {message.error()}")
            event = orjson.loads(message.value())
            user, t = event["user_id"], event["ts"]
            hours = tiles.get(user)
            if hours is None:
                hours = tiles[user] = {}
            hour = t - t % HOUR_US
            tile = hours.get(hour)
            if tile is None:
                hours[hour] = [event["amount"], 1]
            else:
                tile[0] += event["amount"]
                tile[1] += 1
            seen += 1
    seconds = time.perf_counter() - start
    consumer.close()
    return seconds, tiles


def bare_system(
    loop: Callable[[], tuple[float, dict]], sample: list[str], collector: bool = True
) -> System:
    """A bare loop as a system; ``collector=False`` runs it with Python's cyclic garbage
    collector off, as headwater's processor applies its batches."""

    def measure(run: int) -> tuple[float, Values, list[Extra]]:
        if collector:
            seconds, tiles = loop()
        else:
            gc.disable()
            try:
                seconds, tiles = loop()
            finally:
                gc.enable()
        return seconds, tile_values(tiles, sample), []

    return measure


def tile_values(tiles: dict[str, dict[int, list[Any]]], sample: list[str]) -> Values:
    values: Values = {}
    for user in sample:
        hours = tiles.get(user, {})
        for window, end in instants():
            begin = end - (HOUR_US if window == "1h" else DAY_US)
            total, count = 0.0, 0
            for hour in range(begin, end, HOUR_US):
                if hour in hours:
                    total += hours[hour][0]
                    count += hours[hour][1]
            values[user, window, end] = (total, count)
    return values


def differing(a: Values, b: Values) -> int:
    """How many window values (a sum or a count) differ; sums to a relative 1e-9."""
    bad = 0
    for key, (total, count) in a.items():
        other_total, other_count = b[key]
        bad += count != other_count
        bad += not math.isclose(total, other_total, rel_tol=1e-9, abs_tol=1e-9)
    return bad


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=30, help="the events' time span")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--sample", type=int, default=1_000, help="users whose values are compared")
    ap.add_argument("--no-quix", action="store_true", help="skip Quix Streams (no venv install)")
    ap.add_argument("--redis", default=REDIS, help="a Redis database of its own (flushed)")
    ap.add_argument("--no-redis", action="store_true", help="skip the Redis online store")
    ap.add_argument(
        "--quix-no-changelog",
        action="store_true",
        help="also run Quix Streams without changelog topics (its state in RocksDB only)",
    )
    add_runs_argument(ap)
    args = ap.parse_args()
    figures = Figures(args.runs)
    table = generate(args.events, args.users, args.days)
    sample = choose_sample(table, args.sample)
    work = fresh_dir(f"streams-{args.events}")  # a smoke run leaves a full one's alone
    print(
        f"{args.events:,} events, {args.users:,} users over {args.days} days, "
        f"{args.partitions} partitions; {len(sample):,} users' values compared",
        flush=True,
    )
    notes: list[str] = []
    broker = TansuBroker().start()
    try:
        systems = prepare(args, broker, table, sample, work, notes)
        for run in figures.runs():
            measure_run(args.events, systems, run, figures)
    finally:
        broker.stop()
    report(args, figures, list(systems), notes, len(sample))


def prepare(
    args: argparse.Namespace,
    broker: TansuBroker,
    table: pa.Table,
    sample: list[str],
    work: Path,
    notes: list[str],
) -> dict[str, System]:
    """Set-up, once: the logs and topics filled, Quix Streams installed; the systems to run,
    in the table's order, the reference first."""
    embedded = headwater_project(work / "embedded", {})
    notes.append(f"headwater ingest, embedded log: {headwater_ingest(embedded, table):.1f}s")
    bootstrap = broker.address
    for topic in (STREAM, PLAIN_TOPIC):
        create_topic(bootstrap, topic, args.partitions)
    log = broker.url(partitions=args.partitions)
    kafka = headwater_project(work / "kafka", {"log": log})
    seconds = headwater_ingest(kafka, table)
    notes.append(f"headwater ingest through its Kafka log (SDK, Arrow batches): {seconds:.1f}s")
    seconds = produce_plain(bootstrap, table)
    notes.append(f"plain topic for Quix (confluent-kafka producer, JSON): {seconds:.1f}s")

    def headwater(folder: Path) -> System:
        def measure(run: int) -> tuple[float, Values, list[Extra]]:
            return (*headwater_process(folder, args.events, sample), [])

        return measure

    systems = {REFERENCE: headwater(kafka)}
    if not args.no_redis:
        import redis

        redis.Redis.from_url(args.redis).flushdb()
        folder = headwater_project(work / "kafka-redis", {"log": log, "online": args.redis})
        systems["headwater, Kafka log -> Redis"] = headwater(folder)
    systems["headwater, embedded log -> SQLite"] = headwater(embedded)
    if not args.no_quix:
        python = quix_python()
        version = quix_version(python)
        for changelog in (True, False)[: 1 + args.quix_no_changelog]:
            name = f"Quix Streams {version}, RocksDB" + (" + changelog topics" if changelog else "")
            systems[name] = quix_system(python, bootstrap, work, args.events, sample, changelog)
    users, amounts, ts = columns(table)
    loops: dict[str, Callable[[], tuple[float, dict]]] = {
        "consuming the plain topic": lambda: bare_kafka_loop(
            bootstrap, args.partitions, args.events
        ),
        "in memory": lambda: bare_loop(users, amounts, ts),
    }
    for name, loop in loops.items():
        systems[f"bare Python loop, {name}"] = bare_system(loop, sample)
        systems[f"bare Python loop, {name}, collector off"] = bare_system(loop, sample, False)
    return systems


def measure_run(events: int, systems: dict[str, System], run: int, figures: Figures) -> None:
    """Every system once; then each one's values compared with the reference's of this run."""
    values: dict[str, Values] = {}
    for name, measure in systems.items():
        if name.startswith("Quix"):
            print(f"  {name}: running (minutes at 1M events)", flush=True)
        seconds, values[name], extras = measure(run)
        print(f"  {name}: {seconds:.2f}s", flush=True)
        figures.add(f"{name}: seconds", seconds, "s")
        figures.add(f"{name}: events/s", events / seconds, "events/s")
        for figure, value, unit in extras:
            figures.add(f"{name}: {figure}", value, unit)
    for name in systems:
        bad = differing(values[REFERENCE], values[name])
        figures.add(f"{name}: values differing from the reference", bad, "values")


def report(
    args: argparse.Namespace,
    figures: Figures,
    systems: list[str],
    notes: list[str],
    sampled: int,
) -> None:
    """The tables; the first system (headwater, Kafka log -> SQLite) is the reference."""
    for name in systems[1:]:
        figures.compare(
            f"{name} / {REFERENCE} (seconds)", f"{name}: seconds", f"{REFERENCE}: seconds"
        )
    print(f"\n{args.events:,} events, {args.users:,} users, {args.partitions} partitions")
    print(figures.report())
    print(
        f"\nRatios: a system's median seconds / the reference's ({REFERENCE!r}): above 1, "
        f"headwater is that much faster. Values differing from the reference: of "
        f"{sampled * len(instants()) * 2:,} per system and run (sum and count of the 1h window "
        f"ending at each of the last 24 hours and of the 1d window ending at 2026-01-01, for "
        f"{sampled:,} users)."
    )
    for note in notes:
        print(f"  set-up, once: {note}")


if __name__ == "__main__":
    main()
