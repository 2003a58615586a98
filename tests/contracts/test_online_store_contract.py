"""The online store contract, run against every backend (a new backend is one more param).

Redis is reached on 127.0.0.1:6379; each test gets its own namespace, deleted afterwards.
A missing Redis fails these tests: it is never a reason to skip them.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from headwater import Project
from headwater.stores.online.base import OnlineStore
from headwater.stores.online.redis import RedisOnlineStore
from headwater.stores.online.sqlite import SqliteOnlineStore
from headwater.streaming.online import OnlineFeatures
from headwater.streaming.processor import Processor

REDIS_URL = "redis://127.0.0.1:6379/0"
FS = "user@orders#1a2b3c4d5e6f"
OTHER_FS = "user@clicks#0f9e8d7c6b5a"
# What a write with one unusable value raises, per backend (the contract names no type yet).
WRITE_ERRORS = (TypeError, sqlite3.Error)

StoreFactory = Callable[..., OnlineStore]


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A fresh namespace on the test Redis, whose keys are all deleted afterwards."""
    namespace = f"hwtest-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # no Redis is a failure, never a skip
    yield namespace
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])
    client.close()


@pytest.fixture
def open_redis(redis_namespace: str) -> Iterator[StoreFactory]:
    opened: list[RedisOnlineStore] = []

    def factory(**options: Any) -> RedisOnlineStore:
        opened.append(RedisOnlineStore(REDIS_URL, namespace=redis_namespace, **options))
        return opened[-1]

    yield factory
    for store in opened:
        store.close()


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens store objects that all share one backend location (one per test)."""
    if request.param == "redis":
        yield request.getfixturevalue("open_redis")
        return
    opened: list[SqliteOnlineStore] = []

    def factory() -> SqliteOnlineStore:
        opened.append(SqliteOnlineStore(tmp_path / "online.db"))
        return opened[-1]

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: StoreFactory) -> OnlineStore:
    return open_store()


# -- reads -------------------------------------------------------------------------------


def test_unknown_keys_read_as_none(store):
    assert store.get_many(FS, ["nobody", "nobody-else"]) == [None, None]
    assert store.get_many(FS, []) == []


def test_reads_keep_the_order_asked(store):
    store.write({FS: {"a": b"1", "b": b"2", "c": b"3"}}, {})
    assert store.get_many(FS, ["c", "x", "a", "b", "a"]) == [b"3", None, b"1", b"2", b"1"]


def test_several_feature_sets_in_one_call(store):
    store.write({FS: {"a": b"1", "b": b"2"}, OTHER_FS: {"a": b"x"}}, {})
    got = store.get_sets({FS: ["b", "zz", "a", "b"], OTHER_FS: ["a", "b"], "nothing#0": ["a"]})
    assert got == {
        FS: [b"2", None, b"1", b"2"],
        OTHER_FS: [b"x", None],
        "nothing#0": [None],
    }
    assert store.get_sets({FS: []}) == {FS: []}
    many = {f"k{i}": str(i).encode() for i in range(1_500)}  # over one statement's chunk
    store.write({OTHER_FS: many}, {})
    assert store.get_sets({OTHER_FS: list(many), FS: ["a"]}) == {
        OTHER_FS: list(many.values()),
        FS: [b"1"],
    }


def test_many_keys_in_one_call(store):
    states = {f"user-{i}": f"state-{i}".encode() * 3 for i in range(5_000)}
    store.write({FS: states}, {FS: 5_000})
    keys = [*reversed(states), "missing"]
    assert store.get_many(FS, keys) == [*(states[k] for k in keys[:-1]), None]


def test_feature_sets_do_not_share_keys(store):
    store.write({FS: {"a": b"orders"}, OTHER_FS: {"a": b"clicks"}}, {})
    assert store.get_many(FS, ["a"]) == [b"orders"]
    assert store.get_many(OTHER_FS, ["a"]) == [b"clicks"]
    assert store.get_many("user@other#000000000000", ["a"]) == [None]


def test_delete_removes_just_those_states_and_counts_them(store):
    store.write({FS: {"a": b"1", "b": b"2", "a:b": b"3"}, OTHER_FS: {"a": b"x"}}, {FS: 7})
    assert store.delete({FS: ["a", "missing", "a"], "nothing#0": ["a"]}) == 1
    assert store.get_many(FS, ["a", "b", "a:b"]) == [None, b"2", b"3"]
    assert store.get_many(OTHER_FS, ["a"]) == [b"x"]  # another feature set keeps its state
    assert store.checkpoints([FS]) == {FS: 7}  # checkpoints stay
    assert store.delete({FS: ["b", "a:b"], OTHER_FS: ["a"]}) == 3
    assert store.get_sets({FS: ["b", "a:b"], OTHER_FS: ["a"]}) == {
        FS: [None, None],
        OTHER_FS: [None],
    }
    assert store.delete({}) == 0


def test_keys_may_hold_any_character(store):
    keys = ["", " ", "a b", "a:b", "::", "é ü 中文 🙂", "a\x1fb", "x\x1f", "\n\t", "{tag}", "*?[]"]
    store.write({FS: {k: f"v{i}".encode() for i, k in enumerate(keys)}}, {})
    assert store.get_many(FS, keys) == [f"v{i}".encode() for i in range(len(keys))]
    # a separator in the feature set id must not let two (set, key) pairs meet in one key
    store.write({"odd:set": {"x": b"1"}, "odd": {"set:x": b"2"}}, {})
    assert store.get_many("odd:set", ["x", "set:x"]) == [b"1", None]
    assert store.get_many("odd", ["set:x", "x"]) == [b"2", None]


def test_states_are_bytes_exactly(store):
    blobs = {"zero": b"", "nul": b"\x00\xff\x00", "big": bytes(range(256)) * 4_000}
    store.write({FS: blobs}, {})
    assert store.get_many(FS, list(blobs)) == list(blobs.values())


# -- writes ------------------------------------------------------------------------------


def test_a_write_overwrites(store):
    store.write({FS: {"a": b"old", "b": b"kept"}}, {})
    store.write({FS: {"a": b"new"}}, {})
    assert store.get_many(FS, ["a", "b"]) == [b"new", b"kept"]


def test_checkpoints_round_trip(store):
    assert store.checkpoints([FS, OTHER_FS]) == {}
    store.write({}, {FS: 10, OTHER_FS: 3})
    store.write({FS: {"a": b"1"}}, {FS: 2**40})
    assert store.checkpoints([FS, OTHER_FS, "unknown"]) == {FS: 2**40, OTHER_FS: 3}
    assert store.checkpoints([OTHER_FS]) == {OTHER_FS: 3}
    assert store.checkpoints([]) == {}


def test_an_empty_write_changes_nothing(store):
    store.write({FS: {"a": b"1"}}, {FS: 1})
    store.write({}, {})
    store.write({FS: {}}, {})
    assert store.get_many(FS, ["a"]) == [b"1"]
    assert store.checkpoints([FS]) == {FS: 1}


def test_a_failed_write_leaves_nothing_behind(store):
    store.write({FS: {"a": b"before"}}, {FS: 1})
    first = {f"k{i}": b"new" for i in range(100)}
    broken: dict[str, Any] = {"c1": b"ok", "c2": None, "c3": b"ok"}  # one unusable value
    with pytest.raises(WRITE_ERRORS):
        store.write({FS: {"a": b"after", **first}, OTHER_FS: broken}, {FS: 9, OTHER_FS: 9})
    assert store.get_many(FS, ["a", *first]) == [b"before"] + [None] * len(first)
    assert store.get_many(OTHER_FS, list(broken)) == [None, None, None]
    assert store.checkpoints([FS, OTHER_FS]) == {FS: 1}


def test_stores_on_one_backend_see_each_others_writes(open_store):
    writer, reader = open_store(), open_store()
    assert reader.get_many(FS, ["a"]) == [None]
    writer.write({FS: {"a": b"1"}}, {FS: 4})
    assert reader.get_many(FS, ["a"]) == [b"1"]
    assert reader.checkpoints([FS]) == {FS: 4}
    reader.write({FS: {"a": b"2"}}, {FS: 5})
    assert writer.get_many(FS, ["a"]) == [b"2"]
    assert writer.checkpoints([FS]) == {FS: 5}


def test_the_change_mark_moves_with_every_change_through_any_connection(open_store):
    """A store that answers a change mark (None: it has none) answers a new one after each
    write, delete or clear, its own or another connection's, and the same one otherwise:
    what lets a reader keep what it derived from states while the mark stays."""
    writer, reader = open_store(), open_store()
    if reader.change_mark() is None:
        assert writer.change_mark() is None
        return
    seen = [reader.change_mark()]
    reader.get_many(FS, ["a"])
    assert reader.change_mark() == seen[-1]  # reads change nothing

    def moved(store: OnlineStore) -> bool:
        mark = store.change_mark()
        fresh = mark not in seen
        seen.append(mark)
        return fresh

    writer.write({FS: {"a": b"1"}}, {FS: 1})
    assert moved(reader)
    reader.write({FS: {"a": b"2"}}, {FS: 2})  # its own write
    assert moved(reader)
    writer.delete({FS: ["a"]})
    assert moved(reader)
    writer.clear([FS])
    assert moved(reader)
    assert reader.change_mark() == seen[-1]


# -- SQLite only -------------------------------------------------------------------------


def _write_elsewhere(path: Path, value: bytes) -> None:
    """A write by another process (a processor's commit)."""
    code = (
        "import sys\n"
        "from headwater.stores.online.sqlite import SqliteOnlineStore\n"
        "store = SqliteOnlineStore(sys.argv[1])\n"
        f"store.write({{{FS!r}: {{'a': {value!r}}}}}, {{}})\n"
        "store.close()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=120)


def test_sqlite_marks_another_process_commit_from_the_wal_index_or_data_version(tmp_path):
    path = tmp_path / "online.db"
    store = SqliteOnlineStore(path)
    try:
        assert store._wal_index is not None  # the header is read: a mark runs no statement
        before = store.change_mark()
        _write_elsewhere(path, b"1")
        assert store.change_mark() != before
        assert store.get_many(FS, ["a"]) == [b"1"]
        # where the -shm file cannot be opened, SQLite's data_version does the same
        store._wal_closer()
        store._wal_closer = store._wal_index = None
        before = store.change_mark()
        assert store.change_mark() == before
        _write_elsewhere(path, b"2")
        assert store.change_mark() != before
        assert store.get_many(FS, ["a"]) == [b"2"]
    finally:
        store.close()


# -- Redis only --------------------------------------------------------------------------


def test_redis_states_expire_after_the_ttl_but_checkpoints_do_not(open_redis):
    store = open_redis(state_ttl_seconds=1)
    store.write({FS: {"a": b"1", "b": b"2"}}, {FS: 7})
    assert store.get_many(FS, ["a", "b"]) == [b"1", b"2"]
    time.sleep(1.5)
    assert store.get_many(FS, ["a", "b"]) == [None, None]
    assert store.checkpoints([FS]) == {FS: 7}


def test_redis_states_without_ttl_never_expire(open_redis, redis_namespace):
    expiring, lasting = open_redis(state_ttl_seconds=60), open_redis()
    expiring.write({FS: {"a": b"1"}}, {})
    lasting.write({FS: {"b": b"2"}}, {})
    client = redis.Redis.from_url(REDIS_URL)
    ttls = {
        key.rsplit(b":", 1)[1]: client.ttl(key)
        for key in client.scan_iter(match=f"{redis_namespace}:s:*")
    }
    client.close()
    assert ttls.keys() == {b"a", b"b"}
    assert 0 < ttls[b"a"] <= 60
    assert ttls[b"b"] == -1


def test_redis_refuses_a_ttl_that_is_not_positive():
    with pytest.raises(ValueError, match="state_ttl_seconds must be positive"):
        RedisOnlineStore(REDIS_URL, state_ttl_seconds=0)


# -- end to end --------------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# awkward keys: a separator, non-ASCII, a Unicode line separator (control characters such as
# \x1f are refused at ingest since issue 18)
USERS = ["a", "b", "a:b", "é 🙂", "x\u2028y", "user 42"]
FEATURES = ["spend_1h", "spend_7d", "spend_lifetime", "clicks_1d"]


def _events(rng: random.Random, n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def when() -> datetime:
        return NOW - timedelta(minutes=rng.randrange(1, 10 * 24 * 60))

    orders = [
        {
            "user_id": rng.choice(USERS),
            "amount": rng.randrange(1, 1000) / 4,
            "status": rng.choice(["paid", "paid", "failed"]),
            "ts": when(),
        }
        for _ in range(n)
    ]
    clicks = [{"user_id": rng.choice(USERS), "ts": when()} for _ in range(n)]
    return orders, clicks


def test_processor_and_online_features_on_redis_match_sqlite(small_project, open_redis):
    orders, clicks = _events(random.Random(7), 400)
    with Project(small_project, clock=lambda: NOW) as project:
        assert project.ingest("orders", orders).accepted == len(orders)
        assert project.ingest("clicks", clicks).accepted == len(clicks)
        project.process()  # into the project's own (SQLite) online store

        store = open_redis()
        processor = Processor(project.log, store, project.catalog.plans, project.now, batch_size=37)
        stats = processor.run_until_caught_up()
        assert stats.events == len(orders) + len(clicks)
        assert set(processor.lag().values()) == {0}
        ids = [plan.id for plan in project.catalog.plans]
        assert store.checkpoints(ids) == project.online_store.checkpoints(ids)

        rows = [{"user_id": u} for u in [*USERS, "nobody"]]
        on_redis = OnlineFeatures(store, project.catalog, project.now)
        for at in (NOW, NOW + timedelta(minutes=50), NOW + timedelta(days=2)):
            at_us = int(at.timestamp() * 1_000_000)
            expected = project.online.get(rows, FEATURES, at_us)
            assert on_redis.get(rows, FEATURES, at_us) == expected
        assert any(v for row in expected for v in row.values())
