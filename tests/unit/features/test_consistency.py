"""Online value at t == training-set value at t == brute force, on random event sets."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater import Derived, Entity, Feature, Stream, agg, col
from headwater.definitions.types import from_micros
from headwater.definitions.windows import DAY, HOUR, MINUTE
from headwater.features.catalog import FeatureCatalog
from headwater.features.plan import FeatureSetPlan
from headwater.history.archiver import Archiver
from headwater.ingestion.service import Ingestor
from headwater.log.base import Log
from headwater.log.embedded import EmbeddedLog
from headwater.stores.offline.parquet import ParquetOfflineStore
from headwater.stores.online.base import OnlineStore
from headwater.stores.online.sqlite import SqliteOnlineStore
from headwater.streaming.online import OnlineFeatures
from headwater.streaming.processor import Processor
from headwater.training.sets import TrainingSets
from tests import oracle

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
SPAN = 3 * DAY
KEYS = ["k0", "k1", "k2", "k3"]

entity = Entity("account", keys="account_id", owner="t", description="test entity")
stream = Stream(
    "txns",
    fields={
        "account_id": "string",
        "x": "float",
        "n": "int",
        "cat": "string",
        "k": "int",
        "ts": "timestamp",
    },
    key="account_id",
    required=["k"],
    time="ts",
    owner="t",
    description="test events",
)
WINDOWS = ["10m", "1h", "13h", "2d", "lifetime"]


def _features() -> list[Feature]:
    specs = [
        ("cnt", agg.count(), None),
        ("cnt_a", agg.count(), col("cat") == "a"),
        ("sx", agg.sum("x"), None),
        ("sn", agg.sum("n"), (col("cat") != "b") | (col("x") > 0)),
        ("mx", agg.mean("x"), None),
        ("mn", agg.min("n"), None),
        ("mxn", agg.max("x"), ~(col("cat") == "a")),
        ("vx", agg.variance("x"), None),
        ("sdx", agg.stddev("n"), None),
        ("lx", agg.last("x"), None),
        ("lk_req", agg.last("k"), None),  # a never-null field: the batch engine's ASOF path
        ("lk_paid", agg.last("k"), col("cat") == "a"),
        ("fc", agg.first("cat"), None),
        ("lk", agg.last_k("n", 3), None),
        ("cd", agg.count_distinct("cat"), col("n").isin([1, 2, 3, 5, 8])),
    ]
    return [
        Feature(
            name,
            entity=entity,
            stream=stream,
            aggregation=a,
            windows=WINDOWS,
            where=w,
            owner="t",
            description="d",
        )
        for name, a, w in specs
    ]


FEATURES = _features()
DERIVED = Derived(
    "ratio",
    inputs=["sx_1h", "cnt_1h"],
    context=["scale"],
    fn=lambda c: c.sx_1h * c.scale / np.where(c.cnt_1h > 0, c.cnt_1h, np.nan),
    owner="t",
    description="d",
)
MEAN_1H = Derived(  # no request context: the single-row path keeps its value with the rest
    "mean_1h",
    inputs=["sx_1h", "cnt_1h"],
    fn=lambda c: c.sx_1h / np.where(c.cnt_1h > 0, c.cnt_1h, np.nan),
    owner="t",
    description="d",
)
COLUMNS = [c for f in FEATURES for c in f.columns]
NAMES = [c.name for c in COLUMNS]

maybe = lambda s: st.one_of(st.none(), s)  # noqa: E731
event_strategy = st.fixed_dictionaries(
    {
        "account_id": st.sampled_from(KEYS),
        # multiples of 0.25 keep sums exact, so only variances see rounding
        "x": maybe(st.integers(-400, 400).map(lambda i: i / 4)),
        "n": maybe(st.integers(-5, 9)),
        "cat": maybe(st.sampled_from(["a", "b", "c"])),
        "k": st.integers(0, 3),
        # coarse times make ties (same event time) frequent; fine ones hit tile edges
        "ts": st.one_of(
            st.integers(0, SPAN // MINUTE).map(lambda m: T0 + m * MINUTE),
            st.integers(0, SPAN - 1).map(lambda u: T0 + u),
        ),
    }
)


class Engines:
    """The real adapters and engines, wired as Project wires them, with a controlled clock:
    the embedded log and online store, or the ``log`` and ``online_store`` given."""

    def __init__(
        self, folder: Path, log: Log | None = None, online_store: OnlineStore | None = None
    ) -> None:
        self.now = T0
        clock = lambda: self.now  # noqa: E731
        self.log = log or EmbeddedLog(folder / "log.db")
        self.online_store = online_store or SqliteOnlineStore(folder / "online.db")
        self.offline_store = ParquetOfflineStore(folder / "offline")
        self.catalog = FeatureCatalog(FEATURES, [DERIVED, MEAN_1H])
        self.ingestor = Ingestor(self.log, {stream.name: stream}, clock, max_future_us=0)
        self.processor = Processor(
            self.log, self.online_store, self.catalog.plans, clock, batch_size=7
        )
        self.online = OnlineFeatures(self.online_store, self.catalog, clock)
        self.training = TrainingSets.over(
            self.catalog,
            self.offline_store,
            Archiver(self.log, self.offline_store, batch_size=11),
            {stream.name: stream},
            threads=1,
        )

    def logged(self) -> list[tuple[int, int, dict]]:
        """Every event with its offset; an account's events share one partition, so the
        (time, offset) order of ties within an account is the log's."""
        import orjson

        return [
            (r.event_time, r.offset, orjson.loads(r.payload))
            for partition in range(self.log.partitions(stream.name))
            for r in self.log.read(stream.name, 0, 1_000_000, partition)
        ]

    def close(self) -> None:
        self.log.close()
        self.online_store.close()


def _raw(event: dict) -> dict:
    """The event as an SDK user sends it: the time as a datetime."""
    return {**event, "ts": from_micros(event["ts"])}


BY_NAME = {c.name: c for c in COLUMNS}


def _check(logged: list, key: dict, t: int, got: dict, where: str) -> None:
    for name in NAMES:
        exp = oracle.evaluate(BY_NAME[name], logged, key, t)
        assert oracle.same(got[name], exp), f"{name} at {where}: got {got[name]!r}, want {exp!r}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(event_strategy, min_size=0, max_size=60),
    query_offsets=st.lists(st.integers(1, SPAN + DAY), min_size=1, max_size=4, unique=True),
    seed=st.integers(0, 2**32 - 1),
)
def test_online_equals_offline_equals_brute_force(events, query_offsets, seed):
    with tempfile.TemporaryDirectory() as tmp:
        eng = Engines(Path(tmp))
        try:
            check_consistency(eng, events, query_offsets, seed)
        finally:
            eng.close()


def check_consistency(eng, events: list[dict], query_offsets: list[int], seed: int) -> None:
    """The property on one set of engines (also run on Kafka + Redis by the integration
    tests): events arrive late and out of order before each query time; online at t, the
    training set at t and the brute force agree."""
    rnd = random.Random(seed)
    times = sorted(T0 + q for q in query_offsets)
    pending = list(events)
    for t in times:
        # Every event before t arrives before the query at t, in random order (late ones too).
        due = [e for e in pending if e["ts"] < t]
        pending = [e for e in pending if e["ts"] >= t]
        rnd.shuffle(due)
        eng.now = t
        for i in range(0, len(due), 5):
            result = eng.ingestor.ingest(stream.name, [_raw(e) for e in due[i : i + 5]])
            assert not result.rejected
        eng.processor.run_until_caught_up()
        logged = eng.logged()
        rows = [{"account_id": k, "scale": 2.0} for k in KEYS]
        got = eng.online.get(rows, NAMES + ["ratio"])
        for key, values in zip(KEYS, got, strict=True):
            _check(logged, {"account_id": key}, t, values, f"online t={t - T0} key={key}")
            cnt, sx = values["cnt_1h"], values["sx_1h"]
            assert oracle.same(values["ratio"], None if cnt == 0 else sx * 2.0 / cnt)
        for row, values in zip(rows, got, strict=True):
            # one entity at a time: the single-row path, through the caches kept from the
            # earlier query times (hits where nothing changed, misses where it did)
            alone = eng.online.get([row], [*NAMES, "ratio", "mean_1h"])[0]
            cnt, sx = values["cnt_1h"], values["sx_1h"]
            assert oracle.same(alone.pop("mean_1h"), None if cnt == 0 else sx / cnt)
            assert alone == values, f"single row at t={t - T0}: {row}"
    # Events at or after the last query time are in the log now: none may leak backwards.
    eng.now = T0 + SPAN + 2 * DAY
    if pending:
        eng.ingestor.ingest(stream.name, [_raw(e) for e in pending])
    logged = eng.logged()
    spine = pd.DataFrame(
        {
            "account_id": [k for t in times for k in KEYS],
            "timestamp": pd.to_datetime([t for t in times for _ in KEYS], unit="us", utc=True),
            "scale": 2.0,
        }
    )
    table = eng.training.build(spine, NAMES + ["ratio"]).to_pylist()
    for row in table:
        t = int(pd.Timestamp(row["timestamp"]).value // 1000)
        key = {"account_id": row["account_id"]}
        _check(logged, key, t, row, f"offline t={t - T0} key={key}")


def test_cached_answers_equal_fresh_ones_at_every_time():
    """The online path keeps each entity's evaluated values while its stored bytes are
    unchanged and the time is before the next change (``FeatureSetPlan.valid_until``): at
    every minute across two days, and one microsecond either side of each tile edge, a
    reader that has kept everything answers as one that kept nothing."""
    rnd = random.Random(3)
    with tempfile.TemporaryDirectory() as tmp:
        eng = Engines(Path(tmp))
        try:
            events = [
                {
                    "account_id": rnd.choice(KEYS),
                    "x": rnd.randrange(-40, 40) / 4,
                    "n": rnd.randrange(-5, 9),
                    "cat": rnd.choice(["a", "b", "c"]),
                    "k": rnd.randrange(4),
                    "ts": T0 + rnd.randrange(DAY),
                }
                for _ in range(300)
            ]
            # a few events ahead of the first query time: tiles that enter the windows later
            events += [dict(events[i], ts=T0 + DAY + (i + 1) * 7 * MINUTE) for i in range(5)]
            eng.now = T0 + 2 * DAY  # the last events are in the past for the log, not yet
            # for the first query times
            assert not eng.ingestor.ingest(stream.name, [_raw(e) for e in events]).rejected
            eng.processor.run_until_caught_up()
            names = [*NAMES, "ratio", "mean_1h"]
            times = [T0 + DAY + m * MINUTE for m in range(0, 2 * 24 * 60, 1)]
            edges = [T0 + DAY + h * 10 * MINUTE + d for h in range(0, 300) for d in (-1, 0, 1)]
            evaluated = 0
            original = FeatureSetPlan.evaluate

            def counted(plan: FeatureSetPlan, *args: Any) -> dict[str, Any]:
                nonlocal evaluated
                evaluated += 1
                return original(plan, *args)

            queries = 0
            for t in sorted(set(times + edges)):
                for key in KEYS:
                    row = [{"account_id": key, "scale": 3.0}]
                    with patch.object(FeatureSetPlan, "evaluate", counted):
                        kept = eng.online.get(row, names, t)
                    fresh = OnlineFeatures(eng.online_store, eng.catalog, lambda t=t: t)
                    assert kept == fresh.get(row, names, t), f"t={t - T0} key={key}"
                    queries += 1
            # most answers came from the cache: evaluated again only where a window moved
            assert evaluated < queries / 2, (evaluated, queries)
        finally:
            eng.close()


def test_windows_follow_the_hop_aligned_start():
    """A 1h window (5 min hop) at 10:07 covers [09:05, 10:07): 09:04 is out, 09:05 is in."""
    with tempfile.TemporaryDirectory() as tmp:
        eng = Engines(Path(tmp))
        t = T0 + 10 * HOUR + 7 * MINUTE
        eng.now = t
        at = lambda h, m: (T0 + h * HOUR + m * MINUTE) / 1e6  # noqa: E731
        eng.ingestor.ingest(
            stream.name,
            [
                {"account_id": "k0", "k": 1, "x": 1.0, "ts": at(9, 4)},
                {"account_id": "k0", "k": 1, "x": 2.0, "ts": at(9, 5)},
                {"account_id": "k0", "k": 1, "x": 4.0, "ts": at(10, 6)},
            ],
        )
        eng.processor.run_until_caught_up()
        online = eng.online.get([{"account_id": "k0"}], ["sx_1h", "cnt_1h"])[0]
        spine = pa.table(
            {"account_id": ["k0"], "timestamp": pa.array([t], pa.timestamp("us", tz="UTC"))}
        )
        offline = eng.training.build(spine, ["sx_1h", "cnt_1h"]).to_pylist()[0]
        assert online == {"sx_1h": 6.0, "cnt_1h": 2}
        assert (offline["sx_1h"], offline["cnt_1h"]) == (6.0, 2)
        # An event exactly at t is not visible at t (training sets), but is just after it.
        eng.now = t + 1
        eng.ingestor.ingest(stream.name, [{"account_id": "k0", "k": 1, "x": 8.0, "ts": t / 1e6}])
        eng.processor.run_until_caught_up()
        assert eng.training.build(spine, ["sx_1h"]).to_pylist()[0]["sx_1h"] == 6.0
        assert np.isclose(
            eng.online.get([{"account_id": "k0"}], ["sx_1h"], at_us=t + 1)[0]["sx_1h"], 14.0
        )
        eng.close()
