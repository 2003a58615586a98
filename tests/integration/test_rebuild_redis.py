"""``headwater process --rebuild`` on a Redis online store: after a Redis restart (it keeps
nothing on disk) or an eviction, the online state comes back from the log, value for value.

Redis is reached on 127.0.0.1:6379; this module uses its own database, flushed before and
after. A missing Redis fails these tests: it is never a reason to skip them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from headwater import Project
from headwater.cli import app
from tests.conftest import SMALL_DEFINITIONS, write_project

REDIS_DB = 14  # this module's own database: flushed before and after each test
USERS = 300
FEATURES = ["spend_1h", "spend_7d", "spend_lifetime", "clicks_1d"]


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}")
    client.flushdb()  # no Redis is a failure, never a skip
    yield client
    client.flushdb()
    client.close()


def ingested_project(folder: Path, online: str | None, now: datetime) -> Path:
    """The small project (orders and clicks of ``USERS`` users) with events ingested."""
    write_project(folder, SMALL_DEFINITIONS)
    if online is not None:
        with (folder / "headwater.toml").open("a") as toml:
            toml.write(f'[stores]\nonline = "{online}"\n')
    rnd = random.Random(17)

    def when() -> datetime:
        return now - timedelta(seconds=rnd.randrange(60, 9 * 86400))

    orders = [
        {
            "user_id": f"u{rnd.randrange(USERS)}",
            "amount": rnd.randrange(1, 4000) / 4,
            "status": rnd.choice(["paid", "paid", "failed"]),
            "ts": when(),
        }
        for _ in range(3000)
    ]
    clicks = [{"user_id": f"u{rnd.randrange(USERS)}", "ts": when()} for _ in range(3000)]
    with Project(folder) as p:
        assert p.ingest("orders", orders).accepted == len(orders)
        assert p.ingest("clicks", clicks).accepted == len(clicks)
    return folder


def values(folder: Path, at: datetime) -> list[dict[str, Any]]:
    with Project(folder) as p:
        rows = [{"user_id": f"u{i}"} for i in range(USERS)]
        return list(p.online_features(rows, FEATURES, at=at))


def empty(folder: Path, at: datetime) -> list[dict[str, Any]]:
    """What the features read for users the online store knows nothing of."""
    with Project(folder) as p:
        nobody = p.online_features({"user_id": "nobody"}, FEATURES, at=at)
    return [nobody] * USERS


def rebuild(folder: Path) -> str:
    result = CliRunner().invoke(app, ["process", "--rebuild", "--project", str(folder)])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_a_redis_restarted_empty_is_rebuilt_from_the_log(tmp_path, redis_db):
    now = datetime.now(UTC)
    at = now + timedelta(minutes=1)
    folder = ingested_project(tmp_path / "p", f"redis://127.0.0.1:6379/{REDIS_DB}", now)
    with Project(folder) as p:
        assert p.process().events == 6000
    before = values(folder, at)
    assert sum(1 for row in before if row["spend_lifetime"]) > USERS * 0.8

    redis_db.flushdb()  # what a Redis restart does: it keeps nothing
    assert values(folder, at) == empty(folder, at) != before

    out = rebuild(folder)
    assert "cleared the online state" in out and "processed 6000 events" in out
    assert values(folder, at) == before


def test_rebuild_restores_states_redis_evicted_which_processing_alone_cannot(tmp_path, redis_db):
    now = datetime.now(UTC)
    at = now + timedelta(minutes=1)
    folder = ingested_project(tmp_path / "p", f"redis://127.0.0.1:6379/{REDIS_DB}", now)
    with Project(folder) as p:
        p.process()
    before = values(folder, at)

    states = sorted(redis_db.scan_iter(match="hw:s:*"))
    redis_db.delete(*states[::2])  # evicted under maxmemory: the checkpoints stay
    damaged = values(folder, at)
    assert damaged != before
    with Project(folder) as p:
        assert p.process().events == 0  # the checkpoints say all is done
    assert values(folder, at) == damaged

    with Project(folder) as p:
        assert p.process(rebuild=True).events == 6000
    assert values(folder, at) == before
