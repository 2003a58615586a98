"""The query engine port's contract (``history/engines/base.py``), run over every engine and
both kinds of offline store: a new engine is tested by adding one line to ``ENGINES``.

Every answer is checked against a brute force over the events the history was written from.
One local Spark session serves the module (the Spark engine reads ``memory://`` histories
through the driver).
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest

from headwater import Label, agg, col
from headwater.definitions.windows import DAY, HOUR, MINUTE
from headwater.features.catalog import FeatureCatalog
from headwater.history.engines.base import QueryEngine
from headwater.history.engines.duckdb import DuckDBEngine
from headwater.history.engines.spark import SparkEngine, spark_session
from headwater.history.schema import records_to_table
from headwater.log.base import Record
from headwater.stores.offline.base import OfflineStore
from headwater.stores.urls import open_offline
from tests import oracle
from tests.conftest import SPARK
from tests.unit.features.test_consistency import COLUMNS, FEATURES, KEYS, SPAN, T0, entity, stream

ENGINES: dict[str, Callable[[OfflineStore], QueryEngine]] = {
    "duckdb": lambda offline: DuckDBEngine(offline, threads=1),
    "spark": lambda offline: SparkEngine(offline, SPARK),
}
STORES: dict[str, Callable[[Path], str]] = {
    "local folder": lambda tmp: f"file://{tmp}/offline",
    "fsspec memory://": lambda tmp: f"memory://engine-{uuid.uuid4().hex}/history",
}
# (event time, partition, offset, row) of every event written
Event = tuple[int, int, int, dict]


def random_events(seed: int, n: int = 160) -> list[Event]:
    rnd = random.Random(seed)
    events: list[Event] = []
    offsets = [0, 0]
    for _ in range(n):
        account = rnd.choice(KEYS)
        partition = KEYS.index(account) % 2  # a key's events share a partition, as in Kafka
        ts = T0 + rnd.randrange(SPAN // MINUTE) * MINUTE  # coarse: ties are frequent
        row = {
            "account_id": account,
            "x": None if rnd.random() < 0.15 else rnd.randrange(-40, 40) / 4,
            "n": None if rnd.random() < 0.15 else rnd.randrange(-5, 10),
            "cat": rnd.choice(["a", "b", "c", None]),
            "k": rnd.randrange(4),
            "ts": ts,
        }
        events.append((ts, partition, offsets[partition], row))
        offsets[partition] += 1
    return events


def write_history(offline: OfflineStore, events: list[Event]) -> None:
    """The events as the archiver writes them: per partition, in offset order, a few files."""
    for partition in (0, 1):
        mine = [e for e in events if e[1] == partition]
        records = [
            Record(off, f"e{partition}-{off}", ts, T0 + SPAN, orjson.dumps(row), partition)
            for ts, _, off, row in mine
        ]
        for start in range(0, len(records), 50):
            batch = records[start : start + 50]
            offline.append(
                stream.name, records_to_table(stream, batch), start, start + len(batch), partition
            )


@pytest.fixture(scope="module")
def spark():
    session = spark_session(SPARK)
    yield session
    session.stop()


@pytest.fixture(scope="module", params=sorted(STORES))
def offline(request, tmp_path_factory) -> OfflineStore:
    store = open_offline(STORES[request.param](tmp_path_factory.mktemp("offline")), Path("."))
    write_history(store, EVENTS)
    return store


@pytest.fixture(params=sorted(ENGINES))
def engine(request, offline, spark) -> QueryEngine:
    made = ENGINES[request.param](offline)
    yield made
    made.close()


EVENTS = random_events(11)
SNAPSHOT = {stream.name: 70, f"{stream.name}@p1": 25}


def visible(snapshot: dict[str, int] | None) -> list[Event]:
    if snapshot is None:
        return EVENTS
    ends = {0: snapshot[stream.name], 1: snapshot[f"{stream.name}@p1"]}
    return [e for e in EVENTS if e[2] < ends[e[1]]]


def test_history_holds_every_archived_row_below_the_snapshot(engine):
    for snapshot in (None, SNAPSHOT):
        table = engine.history(stream, snapshot)
        pairs = table.select(["_partition", "_offset"]).to_pydict().values()
        got = sorted(zip(*pairs, strict=True))
        assert got == sorted((p, o) for _, p, o, _ in visible(snapshot))
        assert {"account_id", "x", "_event_time", "_offset"} <= set(table.column_names)
    amounts = dict(zip(table["_event_id"].to_pylist(), table["x"].to_pylist(), strict=True))
    assert amounts == {f"e{p}-{o}": row["x"] for _, p, o, row in visible(SNAPSHOT)}


def test_an_empty_history_has_the_streams_columns(engine, tmp_path):
    empty = type(engine)(open_offline(f"file://{tmp_path}/none", tmp_path), *_extra(engine))
    table = empty.history(stream)
    assert table.num_rows == 0 and {"account_id", "x", "_offset"} <= set(table.column_names)
    assert empty.first_seen(["account_id"], [stream], None).num_rows == 0


def _extra(engine: QueryEngine) -> tuple:
    return (SPARK,) if isinstance(engine, SparkEngine) else ()


def test_first_seen_is_each_keys_first_event_time(engine):
    for snapshot in (None, SNAPSHOT):
        table = engine.first_seen(["account_id"], [stream], snapshot)
        want: dict[str, int] = {}
        for ts, _, _, row in visible(snapshot):
            want[row["account_id"]] = min(ts, want.get(row["account_id"], ts))
        assert table["account_id"].to_pylist() == sorted(want)
        assert dict(zip(*table.to_pydict().values(), strict=True)) == want


@pytest.mark.parametrize(
    "aggregation, where",
    [
        (agg.count(), None),
        (agg.sum("x"), col("cat") == "a"),
        (agg.sum("n"), None),
        (agg.last("x"), col("n") > 0),
        (agg.mean("x"), None),
    ],
    ids=["count", "sum-where", "sum-int", "last-where", "mean"],
)
def test_label_aggregates_cover_the_horizon_after_each_time(engine, aggregation, where):
    label = Label(
        "lbl", entity=entity, stream=stream, aggregation=aggregation, horizon="13h",
        where=where, owner="t", description="d",
    )  # fmt: skip
    rnd = random.Random(4)
    times = np.array([T0 + rnd.randrange(-DAY, SPAN) for _ in range(40)], dtype=np.int64)
    keys = [rnd.choice([*KEYS, "nobody"]) for _ in times]
    got = engine.label_aggregates(label, pa.table({"account_id": keys}), times, SNAPSHOT)
    assert len(got) == len(times)
    for value, key, t in zip(got.to_pylist(), keys, times, strict=True):
        chosen = [
            (ts, off, row)
            for ts, _, off, row in visible(SNAPSHOT)
            if row["account_id"] == key
            and t <= ts < t + label.horizon_us
            and (where is None or where.evaluate(row) is True)
        ]
        want = _aggregate(aggregation, chosen)
        assert oracle.same(value, want), (key, t - T0, value, want)


def _aggregate(aggregation, chosen) -> object:
    field = aggregation.field
    values = [(ts, o, row.get(field)) for ts, o, row in chosen]
    if field is not None:
        values = [v for v in values if v[2] is not None]
    match aggregation.kind:
        case "count":
            return len(values)
        case "sum":
            return sum(v for _, _, v in values)
        case "mean":
            return sum(v for _, _, v in values) / len(values) if values else None
        case "last":
            return max(values, key=lambda e: (e[0], e[1]))[2] if values else None
    raise AssertionError(aggregation.kind)


def test_feature_values_follow_the_time_semantics(engine):
    catalog = FeatureCatalog(FEATURES, [])
    (plan,) = catalog.plans
    columns = [c for c in COLUMNS if c.window_us != 13 * HOUR]  # fewer: Spark compiles less
    rnd = random.Random(9)
    times = np.array([T0 + rnd.randrange(SPAN + DAY) for _ in range(30)], dtype=np.int64)
    keys = [rnd.choice([*KEYS, "nobody"]) for _ in times]
    got = engine.feature_values(plan, columns, pa.table({"account_id": keys}), times, SNAPSHOT)
    logged = [(ts, off, row) for ts, _, off, row in visible(SNAPSHOT)]
    for c in columns:
        for value, key, t in zip(got[c.name].to_pylist(), keys, times, strict=True):
            want = oracle.evaluate(c, logged, {"account_id": key}, int(t))
            assert oracle.same(value, want), (c.name, key, int(t) - T0, value, want)


def test_latest_is_the_last_non_null_value_by_event_time_then_log_order(engine):
    got = engine.latest(stream, "account_id", "x", ["k0", "k2", "nobody"])
    want = {}
    for key in ("k0", "k2"):
        mine = [(ts, p, o, r["x"]) for ts, p, o, r in EVENTS if r["account_id"] == key]
        present = [m for m in mine if m[3] is not None]
        want[key] = (max(present)[3], min(ts for ts, *_ in present))
    assert got == want
    assert engine.latest(stream, "account_id", "x", []) == {}


def test_field_stats_count_nulls_ranges_and_means(engine):
    stats = {s["field"]: s for s in engine.field_stats(stream)}
    assert set(stats) == set(stream.fields)
    for name in ("x", "n", "cat"):
        values = [row[name] for *_, row in EVENTS if row[name] is not None]
        s = stats[name]
        assert (s["count"], s["present"]) == (len(EVENTS), len(values))
        assert (s["min"], s["max"]) == (min(values), max(values))
        assert abs(s["distinct"] - len(set(values))) <= max(1, len(set(values)) // 20)
        if name != "cat":
            assert math.isclose(s["mean"], sum(values) / len(values), rel_tol=1e-9)
        else:
            assert s["mean"] is None


def test_floating_point_totals_are_the_same_bits_in_any_file_layout(spark, tmp_path):
    """The same events in another layout (other log offsets, files of other sizes, read by
    several threads) give float sums, means, variances and deviations equal to the bit —
    what makes a training set replayed into another environment hash the same. The values
    cancel (1e16 beside 1.0), so any change in the order they add up in shows."""
    rnd = random.Random(5)
    values = [1e16, -1e16, 1.0, 3.0, 0.1, -2.5e15, 7.25, 1e-3, 2.5e15, -0.7]
    rows = [
        {"account_id": rnd.choice(KEYS), "x": rnd.choice(values), "n": rnd.randrange(9),
         "cat": "a", "k": 0, "ts": T0 + rnd.randrange(SPAN // MINUTE) * MINUTE}
        for _ in range(600)
    ]  # fmt: skip
    catalog = FeatureCatalog(FEATURES, [])
    (plan,) = catalog.plans
    columns = [
        c for c in COLUMNS if c.feature.name in ("sx", "mx", "vx", "sdx") and c.window_us != HOUR
    ]
    times = np.array([T0 + rnd.randrange(SPAN + DAY) for _ in range(40)], dtype=np.int64)
    keys = pa.table({"account_id": [rnd.choice(KEYS) for _ in times]})
    label = Label(
        "spent", entity=entity, stream=stream, aggregation=agg.sum("x"), horizon="1d",
        owner="t", description="d",
    )  # fmt: skip
    answers = []
    for layout, chunk in enumerate((600, 7, 41)):
        order = list(range(len(rows)))
        random.Random(layout).shuffle(order)  # other offsets: the log interleaves otherwise
        store = open_offline(f"file://{tmp_path}/layout{layout}", tmp_path)
        records = [
            Record(i, f"e{n}", rows[n]["ts"], T0 + SPAN, orjson.dumps(rows[n]), 0)
            for i, n in enumerate(order)
        ]
        for start in range(0, len(records), chunk):
            batch = records[start : start + chunk]
            store.append(stream.name, records_to_table(stream, batch), start, start + len(batch))
        pinned = {stream.name: len(records)}
        for name, engine in (
            ("duckdb", DuckDBEngine(store, threads=2)),
            ("spark", SparkEngine(store, SPARK)),
        ):
            got = engine.feature_values(plan, columns, keys, times, pinned)
            spent = engine.label_aggregates(label, keys, times, pinned)
            engine.close()
            bits = {c.name: np.asarray(got[c.name].to_pylist(), dtype=float) for c in columns}
            bits["label"] = np.asarray(spent.to_pylist(), dtype=float)
            answers.append((name, layout, {k: v.tobytes() for k, v in bits.items()}, bits))
    for engine_name in ("duckdb", "spark"):
        mine = [a for a in answers if a[0] == engine_name]
        for _, layout, raw, _ in mine[1:]:
            for column, data in raw.items():
                assert data == mine[0][2][column], (engine_name, layout, column)
    # and the two engines agree closely (each adds in ascending order; variance may differ)
    duck, spk = answers[0][3], answers[3][3]
    for column in duck:
        assert np.allclose(duck[column], spk[column], rtol=1e-9, atol=1e-3, equal_nan=True)
