"""The processor's fast path: the compiled batch update, the batch encoding and the states it
keeps between batches give exactly what the plain per-event path gives."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.definitions.windows import DAY, MINUTE
from headwater.features.plan import plan_feature_sets
from headwater.stores.online.base import OwnershipLost
from headwater.stores.online.sqlite import SqliteOnlineStore
from headwater.streaming.processor import Processor
from tests.unit.features.test_consistency import FEATURES, KEYS, SPAN, T0, Engines, _raw, stream


def _events(seed: int, n: int) -> list[dict]:
    rnd = random.Random(seed)
    return [
        {
            "account_id": rnd.choice(KEYS),
            "x": None if rnd.random() < 0.2 else rnd.randrange(-40, 40) / 4,
            "n": None if rnd.random() < 0.2 else rnd.randrange(-5, 10),
            "cat": rnd.choice(["a", "b", "c", None]),
            "k": rnd.randrange(4),
            "ts": T0 + rnd.randrange(SPAN // MINUTE) * MINUTE + rnd.randrange(3),
        }
        for _ in range(n)
    ]


def test_update_many_is_update_once_per_event_and_encode_many_is_expire_then_encode():
    # every aggregation kind, filters, null fields, three hops and lifetime (see FEATURES)
    (plan,) = plan_feature_sets(FEATURES)
    for seed in range(4):
        events = _events(seed, 400)
        one = {key: plan.new_state() for key in KEYS}
        many = {key: plan.new_state() for key in KEYS}
        for off, event in enumerate(events):
            plan.update(one[event["account_id"]], event, event["ts"], off)
        keys = [e["account_id"] for e in events]
        plan.update_many(many, keys, events, list(range(len(events))))
        assert many == one
        assert sum(len(tiles) for tiles in one["k0"]["h"].values()) > 20  # something to compare
        now = T0 + SPAN - DAY  # drops some tiles of the short windows
        encoded = plan.encode_many(many, now)
        for key, state in one.items():
            plan.expire(state, now)
            assert encoded[key] == plan.encode(state)
            assert plan.decode(encoded[key]) == state


def test_an_event_without_any_value_leaves_the_state_as_it_was():
    (plan,) = plan_feature_sets([f for f in FEATURES if f.aggregation.field == "x"])
    states = {"k0": plan.new_state()}
    row = {"account_id": "k0", "x": None, "n": 1, "cat": "a", "k": 1, "ts": T0}
    plan.update_many(states, ["k0"], [row], [0])
    assert states["k0"] == plan.new_state()


class _Counts(SqliteOnlineStore):
    """A store that counts its writes and fails the ``fail``-th one with ``error``: an
    ``OwnershipLost`` as if another processor had claimed it, an ``OSError`` as if it were
    down."""

    def __init__(self, path: Path, fail: int = 0, error: Exception | None = None) -> None:
        super().__init__(path)
        self.writes, self.fail = 0, fail
        self.error = error or OSError("the store is down, for the test")

    def write(self, states, checkpoints, owners=None):  # type: ignore[no-untyped-def]
        self.writes += 1
        if self.writes == self.fail:
            raise self.error
        super().write(states, checkpoints, owners)


def _stored(store: SqliteOnlineStore, plan) -> list[dict]:  # type: ignore[no-untyped-def]
    return [plan.decode(blob) for blob in store.get_many(plan.id, KEYS)]


@contextlib.contextmanager
def _beside_a_clean_run(tmp_path: Path, seed: int, store: _Counts) -> Iterator[Engines]:
    """Engines on ``store``, with 300 events in their log; on leaving, the states in
    ``store`` must be those of a clean run over the same events (committing every batch)."""
    events = _events(seed, 300)
    clean = Engines(tmp_path / "clean")
    other = Engines(tmp_path / "other", online_store=store)
    try:
        for eng in (clean, other):
            eng.now = T0 + SPAN
            assert not eng.ingestor.ingest(stream.name, [_raw(e) for e in events]).rejected
        clean.processor.commit_seconds = 0.0
        clean.processor.run_until_caught_up()
        yield other
        for plan in clean.catalog.plans:
            assert _stored(store, plan) == _stored(clean.online_store, plan)
    finally:
        clean.close()
        other.close()


@pytest.mark.parametrize(
    ("commit_seconds", "refused_write"),
    [(0.0, 3), (3600.0, 1)],
    ids=["a commit every batch", "one commit for the backlog"],
)
def test_a_refused_batch_is_replayed_from_the_store_not_from_the_states_it_changed(
    tmp_path, commit_seconds, refused_write
):
    """The worker keeps its partitions' states between batches. A refused write changed some
    of them in place; they must be dropped, or the replay would count those events twice.
    With commits deferred, the refused write holds every batch since the last commit."""
    store = _Counts(tmp_path / "o.db", refused_write, OwnershipLost("refused for the test"))
    with _beside_a_clean_run(tmp_path, 7, store) as refused:
        processor = Processor(
            refused.log,
            store,
            refused.catalog.plans,
            lambda: T0 + SPAN,
            40,
            commit_seconds=commit_seconds,
        )
        stop = threading.Event()
        worker = threading.Thread(target=processor.run_forever, args=(stop, 0.01))
        worker.start()
        try:
            deadline = time.monotonic() + 20
            while any(processor.lag().values()) and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            stop.set()
            worker.join(10)
        assert store.writes > refused_write  # refused, then replayed
        assert not any(processor.lag().values())


@pytest.mark.parametrize(
    ("settings", "writes"),
    [
        ({"commit_seconds": 3600.0}, 1),  # behind a backlog: one commit, at the short batch
        ({"commit_seconds": 0.0}, 8),  # every batch (7 of 40 events and 1 of 20)
        ({"commit_seconds": 3600.0, "cached_states": 2}, 8),  # 4 keys: more than fit
    ],
    ids=["deferred", "every batch", "memory bound"],
)
def test_commits_are_deferred_behind_a_backlog_and_give_the_same_states(tmp_path, settings, writes):
    store = _Counts(tmp_path / "o.db")
    with _beside_a_clean_run(tmp_path, 11, store) as deferred:
        processor = Processor(
            deferred.log, store, deferred.catalog.plans, lambda: T0 + SPAN, 40, **settings
        )
        stats = processor.run_until_caught_up()
        assert (stats.events, stats.batches, store.writes) == (300, 8, writes)
        assert not any(processor.lag().values())


def test_a_stop_commits_what_was_processed_and_a_failed_commit_is_replayed(tmp_path):
    store = _Counts(tmp_path / "o.db", fail=1)
    with _beside_a_clean_run(tmp_path, 13, store) as failing:
        plans = failing.catalog.plans
        processor = Processor(failing.log, store, plans, lambda: T0 + SPAN, 40)
        with pytest.raises(OSError, match="store is down"):
            processor.run_until_caught_up()  # its only commit fails: nothing is stored
        assert sum(processor.lag().values()) == 300 * len(plans)
        stop = threading.Event()
        seen: list[int] = []

        def stop_after_two(n: int) -> None:
            seen.append(n)
            if len(seen) == 2:
                stop.set()

        stats = processor.run_until_caught_up(stop_after_two, stop)
        assert (stats.events, store.writes) == (80, 2)  # the stop committed both batches
        assert sum(processor.lag().values()) == 220 * len(plans)
        processor.run_until_caught_up()
        assert not any(processor.lag().values())


class _StopsAtRead:
    """The log, setting ``stop`` at its ``n``-th read of payloads (read-ahead included)."""

    def __init__(self, log, n: int, stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
        self.log, self.n, self.stop, self.reads = log, n, stop, 0

    def read_payloads(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.reads += 1
        if self.reads == self.n:
            self.stop.set()
        return self.log.read_payloads(*args, **kwargs)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.log, name)


def test_a_worker_stopped_behind_a_backlog_commits_what_it_processed(tmp_path):
    store = _Counts(tmp_path / "o.db")
    with _beside_a_clean_run(tmp_path, 17, store) as stopped:
        plans = stopped.catalog.plans
        stop = threading.Event()
        log = _StopsAtRead(stopped.log, 3, stop)
        worker = Processor(log, store, plans, lambda: T0 + SPAN, 40, commit_seconds=3600.0)  # type: ignore[arg-type]
        stats = worker.run_forever(stop, 0.01)
        assert 0 < stats.events < 300 and store.writes == 1  # one commit: the stop's
        assert sum(worker.lag().values()) == (300 - stats.events) * len(plans)
        Processor(stopped.log, store, plans, lambda: T0 + SPAN, 40).run_until_caught_up()
