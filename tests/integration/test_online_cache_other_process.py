"""The serving path's per-entity caches (decoded states, evaluated values, whole answers)
with the processor in another process, on Redis and on the embedded SQLite store: a reader
that has kept everything answers, after the other process processed more events, exactly
what a fresh reader and the training set answer. On Redis the caches are checked against
the bytes read in each request's own round trip; on SQLite a request first reads the
store's change mark (the WAL-index header every commit rewrites, and the connection's own
writes) and reads the bytes only when it moved, so nothing the other process writes can be
missed.

Redis is reached on 127.0.0.1:6379, in the database of test_rebuild_redis.py (its fixture,
flushed before and after each test). A missing Redis fails this test, never skips it.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from headwater import Project
from tests.integration.test_rebuild_redis import (  # noqa: F401 - redis_db: a fixture
    FEATURES,
    REDIS_DB,
    USERS,
    ingested_project,
    redis_db,
)


def process_elsewhere(folder: Path) -> None:
    """``headwater process`` in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-m", "headwater", "process", "--project", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _count_state_reads(project: Project) -> Callable[[], int]:
    """Counts the reader's online store's state reads from now on."""
    store = project.online._online
    calls = [0]
    read = store.get_sets

    def counted(wanted: Any) -> Any:
        calls[0] += 1
        return read(wanted)

    store.get_sets = counted  # type: ignore[method-assign]
    return lambda: calls[0]


def one_at_a_time(project: Project, users: list[str], at: datetime) -> list[dict]:
    return [project.online_features({"user_id": u}, FEATURES, at=at) for u in users]


@pytest.mark.usefixtures("redis_db")
@pytest.mark.parametrize("online", ["redis", "sqlite"])
def test_a_reader_with_warm_caches_sees_what_another_process_processed(
    tmp_path: Path, online: str
) -> None:
    """On Redis the caches compare the bytes read; on the embedded SQLite store a reader
    that kept an answer reads no bytes while the store's change mark stays the same."""
    url = f"redis://127.0.0.1:6379/{REDIS_DB}" if online == "redis" else None
    folder = ingested_project(tmp_path / "p", url, datetime.now(UTC))
    process_elsewhere(folder)
    # Online values are exact at times no earlier than the processor's clock (it drops
    # the tiles no window at its "now" reads), so each read is at a time after processing.
    at = datetime.now(UTC)
    users = [f"u{i}" for i in range(0, USERS, 5)]
    with Project(folder) as reader:
        before = one_at_a_time(reader, users, at)
        reads = _count_state_reads(reader)
        assert one_at_a_time(reader, users, at) == before  # now from the caches
        if online == "sqlite":
            assert reads() == 0  # the mark alone said nothing changed
        assert any(v["spend_7d"] for v in before)

        rnd = random.Random(5)  # more paid orders of half of those users, then processing
        more = [
            {
                "user_id": u,
                "amount": rnd.randrange(4, 400) / 4,
                "status": "paid",
                "ts": at - timedelta(minutes=rnd.randrange(2, 600)),
            }
            for u in users[::2]
            for _ in range(3)
        ]
        with Project(folder) as writer:
            assert writer.ingest("orders", more).accepted == len(more)
        process_elsewhere(folder)

        at = datetime.now(UTC)
        after = one_at_a_time(reader, users, at)
        if online == "sqlite":
            assert reads() >= len(users)  # the other process's writes moved the mark
    changed = [u for u, b, a in zip(users, before, after, strict=True) if a != b]
    assert set(users[::2]) <= set(changed)  # (others only where a window moved meanwhile)
    with Project(folder) as fresh:
        assert one_at_a_time(fresh, users, at) == after
        spine = pd.DataFrame({"user_id": users, "timestamp": pd.Timestamp(at)})
        table = fresh.training_set(spine, FEATURES)
    for user, values, (_, row) in zip(users, after, table.iterrows(), strict=True):
        for name in FEATURES:
            offline = row[name]
            expected = None if pd.isna(offline) else offline
            assert values[name] == pytest.approx(expected), (user, name)
