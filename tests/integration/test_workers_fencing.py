"""Fencing of processors that share partitions: the owners contract of every online store,
and a stalled ("zombie") processor whose late write must not corrupt the state.

Redis is reached on 127.0.0.1:6379; each test gets its own namespace, deleted afterwards.
A missing Redis fails these tests: it is never a reason to skip them.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from headwater.definitions.types import from_micros
from headwater.definitions.windows import MINUTE
from headwater.features.catalog import FeatureCatalog
from headwater.ingestion.service import Ingestor
from headwater.log.embedded import EmbeddedLog
from headwater.stores.online.base import OnlineStore, OwnershipLost
from headwater.stores.online.redis import RedisOnlineStore
from headwater.stores.online.sqlite import SqliteOnlineStore
from headwater.streaming.processor import Processor, TakenOver
from tests.unit.features.test_consistency import DERIVED, FEATURES, SPAN, T0, stream

REDIS_URL = "redis://127.0.0.1:6379/0"
FS = "user@orders#1a2b3c4d5e6f"
OTHER_FS = "user@clicks#0f9e8d7c6b5a"
NOW = T0 + SPAN + MINUTE


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    namespace = f"hwtest-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # no Redis is a failure, never a skip
    yield namespace
    keys = list(client.scan_iter(match=f"{namespace}*", count=1000))  # and "{namespace}-other"
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])
    client.close()


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """Opens store objects sharing one backend location; ``open_store(other=True)`` one apart."""
    opened: list[Any] = []

    def factory(other: bool = False) -> Any:
        if request.param == "redis":
            namespace = request.getfixturevalue("redis_namespace") + ("-other" if other else "")
            opened.append(RedisOnlineStore(REDIS_URL, namespace=namespace))
        else:
            opened.append(SqliteOnlineStore(tmp_path / ("other.db" if other else "online.db")))
        return opened[-1]

    yield factory
    for store in opened:
        store.close()


# -- the owners contract -----------------------------------------------------------------


def test_a_write_fenced_by_its_owner_applies(open_store):
    store = open_store()
    store.claim([FS, f"{FS}@p1"], "t1")
    store.write({FS: {"a": b"1"}}, {FS: 3, f"{FS}@p1": 4}, {FS: "t1", f"{FS}@p1": "t1"})
    assert store.get_many(FS, ["a"]) == [b"1"]
    assert store.checkpoints([FS, f"{FS}@p1"]) == {FS: 3, f"{FS}@p1": 4}


def test_the_last_claim_wins_and_an_earlier_owner_writes_nothing(open_store):
    zombie, owner = open_store(), open_store()
    zombie.claim([FS, OTHER_FS], "old")
    zombie.write({FS: {"a": b"1"}}, {FS: 1}, {FS: "old"})
    owner.claim([FS], "new")
    with pytest.raises(OwnershipLost, match=FS):
        zombie.write({FS: {"a": b"late", "b": b"late"}}, {FS: 9}, {FS: "old", OTHER_FS: "old"})
    assert owner.get_many(FS, ["a", "b"]) == [b"1", None]
    assert owner.checkpoints([FS]) == {FS: 1}
    owner.write({FS: {"a": b"2"}}, {FS: 2}, {FS: "new"})
    zombie.write({OTHER_FS: {"a": b"x"}}, {OTHER_FS: 5}, {OTHER_FS: "old"})  # still its own
    assert owner.get_many(FS, ["a"]) == [b"2"]
    assert owner.checkpoints([FS, OTHER_FS]) == {FS: 2, OTHER_FS: 5}


def test_a_name_never_claimed_or_cleared_refuses_fenced_writes(open_store):
    store = open_store()
    with pytest.raises(OwnershipLost):
        store.write({FS: {"a": b"1"}}, {FS: 1}, {FS: "anything"})
    store.claim([FS], "t")
    store.clear([FS])  # a rebuild, or a Redis that restarted empty, forgets the owners too
    with pytest.raises(OwnershipLost):
        store.write({FS: {"a": b"1"}}, {FS: 1}, {FS: "t"})
    assert store.get_many(FS, ["a"]) == [None]
    assert store.checkpoints([FS]) == {}
    store.write({FS: {"a": b"2"}}, {FS: 2})  # unfenced writes (one processor alone) still go
    assert store.get_many(FS, ["a"]) == [b"2"]


def test_clear_forgets_only_the_feature_sets_asked(open_store):
    store = open_store()
    names = [FS, f"{FS}@p1", f"{FS}@p12", OTHER_FS, f"{OTHER_FS}@p1", "scoring:trigger"]
    store.claim(names, "t")
    keys = ["a", "b:c", "*", "[x]", "é"]
    store.write(
        {FS: dict.fromkeys(keys, b"1"), OTHER_FS: dict.fromkeys(keys, b"2")},
        dict.fromkeys(names, 7),
        dict.fromkeys(names, "t"),
    )
    store.clear([FS])
    assert store.get_many(FS, keys) == [None] * len(keys)
    assert store.get_many(OTHER_FS, keys) == [b"2"] * len(keys)
    assert store.checkpoints(names) == dict.fromkeys(names[3:], 7)
    store.write({}, {OTHER_FS: 8}, {OTHER_FS: "t"})  # the other set's owners are kept
    with pytest.raises(OwnershipLost):
        store.write({}, {FS: 8}, {FS: "t"})


# -- processors sharing a partition ------------------------------------------------------


class Stalling:
    """An online store whose first fenced write is held until ``meanwhile`` has run: the
    processor above it stalls between computing a batch and committing it."""

    fenced = True

    def __init__(self, store: OnlineStore, meanwhile: Callable[[], object]) -> None:
        self.store = store
        self.meanwhile: Callable[[], object] | None = meanwhile
        self.refused = 0

    def write(
        self,
        states: Mapping[str, Mapping[str, bytes]],
        checkpoints: Mapping[str, int],
        owners: Mapping[str, str] | None = None,
    ) -> None:
        if self.meanwhile is not None and owners:
            run, self.meanwhile = self.meanwhile, None
            run()
        try:
            self.store.write(states, checkpoints, owners if self.fenced else None)
        except OwnershipLost:
            self.refused += 1
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class Unfenced(Stalling):
    """The same, but writes ignore owners: what a processor without fencing would do."""

    fenced = False


def _events(n: int, accounts: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    return [
        {
            "account_id": f"acct-{rnd.randrange(accounts)}",
            "x": rnd.randrange(-400, 400) / 4,
            "n": rnd.randrange(-5, 10),
            "cat": rnd.choice("abc"),
            "k": rnd.randrange(4),
            "ts": from_micros(T0 + rnd.randrange(SPAN // MINUTE) * MINUTE),
        }
        for _ in range(n)
    ]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EmbeddedLog]:
    log = EmbeddedLog(tmp_path / "log.db")
    ingestor = Ingestor(log, {stream.name: stream}, lambda: NOW, max_future_us=0)
    assert ingestor.ingest(stream.name, _events(3000, 120, seed=3)).accepted == 3000
    yield log
    log.close()


def _processor(log: EmbeddedLog, store: Any) -> Processor:
    """A processor committing every batch (of 400 of the 3000 events), so a stall falls
    between batches of one run."""
    plans = FeatureCatalog(FEATURES, [DERIVED]).plans
    return Processor(log, store, plans, lambda: NOW, batch_size=400, commit_seconds=0.0)


def _contents(store: OnlineStore, processor: Processor) -> dict[str, Any]:
    """Every state (as bytes) and checkpoint the processor's feature sets have."""
    keys = [f"acct-{i}" for i in range(120)]
    plans = FeatureCatalog(FEATURES, [DERIVED]).plans
    return {
        "states": {p.id: store.get_many(p.id, keys) for p in plans},
        "checkpoints": store.checkpoints([p.id for p in plans]),
    }


def test_a_stalled_processors_late_write_is_refused_and_the_state_stays_exact(log, open_store):
    store, reference = open_store(), open_store(other=True)
    _processor(log, reference).run_until_caught_up()
    survivor = _processor(log, store)
    # The zombie computes its first batch, stalls; the survivor claims the partition and
    # processes everything; then the zombie's write arrives.
    stalling = Stalling(store, meanwhile=survivor.run_until_caught_up)
    zombie = _processor(log, stalling)
    with pytest.raises(TakenOver, match="another processor took over partition 0"):
        zombie.run_until_caught_up()
    assert stalling.refused == 1
    assert _contents(store, survivor) == _contents(reference, survivor)


def test_without_the_fence_the_late_write_would_corrupt_the_state(log, open_store):
    """The control of the test above: it holds because of the fence."""
    store, reference = open_store(), open_store(other=True)
    _processor(log, reference).run_until_caught_up()
    survivor = _processor(log, store)
    zombie = _processor(log, Unfenced(store, meanwhile=survivor.run_until_caught_up))
    zombie.run_until_caught_up()  # overwrites with its stale batch, moves the checkpoint back
    survivor.run_until_caught_up()  # then replays from there onto newer states: counts twice
    assert _contents(store, survivor) != _contents(reference, survivor)


def test_a_refused_worker_claims_again_and_carries_on_exactly(log, open_store):
    store, reference = open_store(), open_store(other=True)
    _processor(log, reference).run_until_caught_up()
    other = _processor(log, store)
    stalling = Stalling(store, meanwhile=lambda: other.run_until_caught_up(stop=_after(2)))
    worker = _processor(log, stalling)  # alone in the log's only partition (SoleMember)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop, 0.01))
    thread.start()
    try:
        for _ in range(1000):
            if set(worker.lag().values()) == {0}:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join()
    assert stalling.refused == 1
    assert _contents(store, worker) == _contents(reference, worker)


def _after(batches: int) -> threading.Event:
    """A stop event that is set once checked ``batches`` times (a run cut short)."""

    class Countdown(threading.Event):
        left = batches

        def is_set(self) -> bool:
            self.left -= 1
            return self.left < 0

    return Countdown()
