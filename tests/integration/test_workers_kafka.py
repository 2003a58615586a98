"""Stream workers sharing a Kafka log's partitions through a consumer group: one is killed
with SIGKILL mid-way, the survivor takes its partitions over, and the online state ends
exactly as one worker alone makes it.

The broker is the session's Tansu (a missing binary fails, never skips); Redis is reached on
127.0.0.1:6379 and this module uses its own database, flushed before and after.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest
import redis

from headwater import Project
from headwater.log.base import partition_name
from headwater.streaming.processor import ProcessingError
from tests.kafka_broker import TansuBroker

REDIS_DB = 13  # this module's own database: flushed before and after each test
PARTITIONS = 4
USERS = 400
FEATURES = [
    "spend_1h",
    "spend_7d",
    "spend_lifetime",
    "orders_1d",
    "orders_lifetime",
    "avg_lifetime",
]

DEFINITIONS = """
from headwater import Entity, Feature, Stream, agg, col

user = Entity("user", keys="user_id", owner="growth", description="A shopper")
orders = Stream(
    "{stream}",
    fields={{"user_id": "string", "amount": "float", "status": "string", "ts": "timestamp"}},
    key="user_id", time="ts", required=["amount"], owner="payments", description="Orders",
)
features = [
    Feature("spend", entity=user, stream=orders, aggregation=agg.sum("amount"),
            windows=["1h", "7d", "lifetime"], where=col("status") == "paid",
            owner="payments", description="Money spent"),
    Feature("orders", entity=user, stream=orders, aggregation=agg.count(),
            windows=["1d", "lifetime"], owner="payments", description="Orders"),
    Feature("avg", entity=user, stream=orders, aggregation=agg.mean("amount"),
            owner="payments", description="Mean order"),
]
"""


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}")
    client.flushdb()  # no Redis is a failure, never a skip
    yield client
    client.flushdb()
    client.close()


def _project(folder: Path, stream: str, stores: dict[str, str]) -> Path:
    folder.mkdir()
    lines = "".join(f'{name} = "{url}"\n' for name, url in stores.items())
    (folder / "headwater.toml").write_text(
        f'[project]\nname = "{folder.name}"\ndefinitions = ["definitions.py"]\n[stores]\n{lines}'
    )
    (folder / "definitions.py").write_text(textwrap.dedent(DEFINITIONS.format(stream=stream)))
    return folder


def _events(n: int, rnd: random.Random, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "user_id": f"u{rnd.randrange(USERS)}",
            "amount": rnd.randrange(1, 4000) / 4,
            "status": rnd.choice(["paid", "paid", "failed"]),
            "ts": now - timedelta(seconds=rnd.randrange(60, 3 * 86400)),
        }
        for _ in range(n)
    ]


class Worker:
    """``headwater process --forever`` as a real process, its output in a file."""

    def __init__(self, folder: Path, name: str, *args: str) -> None:
        self.output: IO[bytes] = (folder / f"{name}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "headwater", "process", "--forever", "-p", str(folder), *args],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )
        self.log = folder / f"{name}.log"

    def stop(self) -> int:
        """SIGTERM (the worker leaves its group and exits), SIGKILL if it takes too long."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.close()
        return self.process.returncode


def _owners(client: redis.Redis, plan_ids: list[str]) -> dict[int, set[bytes | None]]:
    """Per partition, the tokens its feature sets' checkpoints are owned by."""
    owners = client.hgetall("hw:owners")
    return {
        p: {owners.get(partition_name(plan, p).encode()) for plan in plan_ids}
        for p in range(PARTITIONS)
    }


def _wait(what: str, ready: Any, timeout: float, workers: list[Worker]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(0.05)
    logs = "\n".join(f"--- {w.log.name}\n{w.log.read_text()[-3000:]}" for w in workers)
    raise AssertionError(f"{what}: not within {timeout}s\n{logs}")


def test_a_killed_worker_s_partitions_are_taken_over_and_the_state_is_exact(
    tmp_path: Path, kafka_broker: TansuBroker, redis_db: redis.Redis
) -> None:
    began = time.monotonic()
    stream = f"orders_{uuid.uuid4().hex[:10]}"
    log_url = kafka_broker.url(partitions=PARTITIONS, idle_ms=60, delivery_timeout_ms=5000)
    shared = _project(
        tmp_path / "shared",
        stream,
        {"log": log_url, "online": f"redis://127.0.0.1:6379/{REDIS_DB}"},
    )
    alone = _project(tmp_path / "alone", stream, {"log": log_url})  # SQLite online store
    now = datetime.now(UTC)
    rnd = random.Random(11)
    group = f"workers-{uuid.uuid4().hex[:8]}"
    workers: list[Worker] = []
    with Project(shared) as p:
        plan_ids = [plan.id for plan in p.catalog.plans]

        def behind() -> int:
            return sum(p.processor.lag().values())

        def progress() -> list[int]:
            """Per partition, the events processed (by the first feature set)."""
            names = [partition_name(plan_ids[0], n) for n in range(PARTITIONS)]
            done = p.online_store.checkpoints(names)
            return [done.get(name, 0) for name in names]

        try:
            assert p.ingest(stream, _events(3000, rnd, now)).accepted == 3000
            # Small batches, each committed: processing takes long enough for a kill to land
            # mid-way, and the checkpoints show how far each worker got.
            flags = ["--batch-size", "25", "--commit-seconds", "0"]
            workers = [Worker(shared, f"w{i}", "--group", group, *flags) for i in (0, 1)]

            def split_in_two() -> bool:
                owners = [t for t in _owners(redis_db, plan_ids).values() if len(t) == 1]
                tokens = [next(iter(t)) for t in owners]
                counts = sorted(tokens.count(t) for t in set(tokens))
                return len(tokens) == PARTITIONS and counts == [2, 2]

            _wait("the two workers share the partitions", split_in_two, 30, workers)
            before = {next(iter(t)) for t in _owners(redis_db, plan_ids).values()}
            split_at = time.monotonic() - began

            at_split = progress()
            # enough new events that one worker cannot finish both its partitions while the
            # other is still starting on its own (a stall of a second or two under load)
            assert p.ingest(stream, _events(10_000, rnd, now)).accepted == 10_000

            def both_working() -> bool:
                # each partition moved since the split, so each worker is mid-way through
                # its own (one worker may start late: waiting on the total alone let the
                # other finish both of its partitions before the kill)
                now_at = progress()
                moved = all(d > s for d, s in zip(now_at, at_split, strict=True))
                return moved and sum(now_at) > 3200

            _wait("work beyond the first events on every partition", both_working, 30, workers)
            killed, survivor = workers
            killed.process.send_signal(signal.SIGKILL)  # mid-way: no chance to leave the group
            assert killed.process.wait(5) == -signal.SIGKILL
            killed_at = time.monotonic() - began
            done_at_kill = progress()
            at_kill = sum(done_at_kill)
            # each partition's end, once they add up to the events sent (Tansu's watermark
            # can lag: an end read at once could show a partition with work left as done)
            ends: dict[int, int] = {}

            def ends_known() -> bool:
                ends.update({n: p.log.end_offset(stream, n) for n in range(PARTITIONS)})
                return sum(ends.values()) == 13_000

            _wait("every partition's end offset", ends_known, 30, [survivor])
            left = {n: ends[n] - done for n, done in enumerate(done_at_kill)}
            # each worker owns two partitions: with at most one partition done, the killed
            # worker was mid-way through at least one of its own (all four having events left
            # was asked before, and one partition with few keys could finish first under load)
            finished = [n for n, count in left.items() if count == 0]
            assert len(finished) <= 1, f"events left per partition at the kill: {left}"

            assert p.ingest(stream, _events(2000, rnd, now)).accepted == 2000
            _wait("the survivor catches up", lambda: behind() == 0, 40, workers)
            caught_up_at = time.monotonic() - began
            after = _owners(redis_db, plan_ids)
            assert all(len(t) == 1 for t in after.values())
            tokens = {next(iter(t)) for t in after.values()}
            assert len(tokens) == 1 and not tokens & before  # one new claim of all four
            assert survivor.process.poll() is None
        finally:
            codes = [w.stop() for w in workers]
        assert codes[1] == 0, workers[1].log.read_text()[-3000:]

        with Project(alone) as single:  # one worker alone, over the same events
            assert single.process().events == 15_000
            rows = [{"user_id": f"u{i}"} for i in range(USERS)]
            at = now + timedelta(minutes=1)
            expected = single.online_features(rows, FEATURES, at=at)
            assert p.online_features(rows, FEATURES, at=at) == expected
            assert sum(1 for row in expected if row["orders_lifetime"]) > USERS * 0.9
            names = [partition_name(i, n) for i in plan_ids for n in range(PARTITIONS)]
            assert p.online_store.checkpoints(names) == single.online_store.checkpoints(names)
    print(
        f"\nsplit at {split_at:.1f}s, SIGKILL at {killed_at:.1f}s ({at_kill} of 13000 events "
        f"done, left per partition {left}), caught up at {caught_up_at:.1f}s, "
        f"all done at {time.monotonic() - began:.1f}s"
    )


def test_workers_processes_share_the_partitions_and_stop_on_sigterm(
    tmp_path: Path, kafka_broker: TansuBroker, redis_db: redis.Redis
) -> None:
    stream = f"orders_{uuid.uuid4().hex[:10]}"
    log_url = kafka_broker.url(partitions=PARTITIONS, idle_ms=60, delivery_timeout_ms=5000)
    folder = _project(
        tmp_path / "pool", stream, {"log": log_url, "online": f"redis://127.0.0.1:6379/{REDIS_DB}"}
    )
    with Project(folder) as p:
        plan_ids = [plan.id for plan in p.catalog.plans]
        assert p.ingest(stream, _events(2000, random.Random(5), datetime.now(UTC))).accepted == 2000
        pool = Worker(folder, "pool", "--workers", "2")
        try:

            def shared_and_done() -> bool:
                tokens = {t for ts in _owners(redis_db, plan_ids).values() for t in ts}
                return (
                    len(tokens) == 2
                    and None not in tokens
                    and p.processor.lag() == {plan_id: 0 for plan_id in plan_ids}
                )

            _wait("two worker processes share the work", shared_and_done, 40, [pool])
        finally:
            code = pool.stop()  # SIGTERM; a pool that does not stop in time gets SIGKILL
        assert code == 0, pool.log.read_text()[-3000:]


def test_the_embedded_log_has_one_worker(small_project: Path) -> None:
    with Project(small_project) as p:
        with pytest.raises(ProcessingError, match="no consumer groups"):
            p.process(forever=True, workers=2)
        with pytest.raises(ProcessingError, match="no consumer groups"):
            p.process(forever=True, group="mine")
        with pytest.raises(ProcessingError, match="at least 1"):
            p.process(forever=True, workers=0)
