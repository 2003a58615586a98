"""The sorted copy of a stream's history gives the same training sets as the join it replaces."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pytest

from headwater import Entity, Feature, Project, Stream, agg, col
from headwater.definitions.types import from_micros
from headwater.definitions.windows import DAY, HOUR, MINUTE
from headwater.features.catalog import FeatureCatalog
from headwater.history.archiver import Archiver
from headwater.history.describe import describe_copies
from headwater.history.engines import sorted_history, sorted_queries
from headwater.history.engines import sql as batch
from headwater.history.engines.sorted_history import (
    REBUILD_SHARE,
    read_run,
    refresh,
    sort_rows,
)
from headwater.history.engines.sorted_view import SortedView
from headwater.history.engines.sql import feature_set_values
from headwater.history.schema import history_schema
from headwater.log.base import NewRecord
from headwater.log.embedded import EmbeddedLog
from headwater.stores.offline.parquet import ParquetOfflineStore
from headwater.training.sets import TrainingSets

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds


def _stream(key_type: str) -> Stream:
    return Stream(
        "stats",
        fields={
            "uid": key_type,
            "x": "float",
            "k": "int",
            "n": "int",
            "note": "string",
            "ts": "timestamp",
        },  # fmt: skip
        key="uid",
        time="ts",
        required=["x", "k"],
        owner="t",
        description="d",
    )


def _features(stream: Stream) -> list[Feature]:
    user = Entity("user", keys="uid", owner="t", description="d")
    windows = ["1h", "2d", "lifetime"]
    return [
        Feature("lx", entity=user, stream=stream, aggregation=agg.last("x"), windows=windows,
                owner="t", description="d"),
        Feature("lk", entity=user, stream=stream, aggregation=agg.last("k"), windows=windows,
                hop="1s", owner="t", description="d"),
        # a filter or a nullable field: the nearest row the filter keeps
        Feature("lk_big", entity=user, stream=stream, aggregation=agg.last("k"), windows=["2d"],
                where=col("x") > 0, owner="t", description="d"),
        Feature("lnote", entity=user, stream=stream, aggregation=agg.last("note"),
                windows=["2d"], owner="t", description="d"),
        Feature("fx", entity=user, stream=stream, aggregation=agg.first("x"), windows=windows,
                owner="t", description="d"),
        Feature("fnote", entity=user, stream=stream, aggregation=agg.first("note"),
                windows=["2d"], where=col("k") < 500, owner="t", description="d"),
        # differences of prefix sums, filtered or not, of never-null and nullable fields
        Feature("cnt", entity=user, stream=stream, aggregation=agg.count(), windows=windows,
                owner="t", description="d"),
        Feature("cnt_noted", entity=user, stream=stream, aggregation=agg.count(),
                windows=windows, where=col("note").isin(["n3", "n6"]) | (col("x") > 1),
                owner="t", description="d"),
        Feature("sx", entity=user, stream=stream, aggregation=agg.sum("x"), windows=windows,
                owner="t", description="d"),
        Feature("sn", entity=user, stream=stream, aggregation=agg.sum("n"), windows=windows,
                where=col("k") > 300, owner="t", description="d"),
        Feature("mx", entity=user, stream=stream, aggregation=agg.mean("x"), windows=windows,
                where=col("n") != 2, owner="t", description="d"),
        Feature("mn", entity=user, stream=stream, aggregation=agg.mean("n"), windows=windows,
                owner="t", description="d"),
        Feature("l3x", entity=user, stream=stream, aggregation=agg.last_k("x", 3),
                windows=windows, owner="t", description="d"),
        Feature("l2note", entity=user, stream=stream, aggregation=agg.last_k("note", 2),
                windows=["2d"], where=col("k") > 200, owner="t", description="d"),
        # a reduction over the rows between the bounds
        Feature("mxk", entity=user, stream=stream, aggregation=agg.max("k"), windows=["2d"],
                owner="t", description="d"),
        Feature("mnx", entity=user, stream=stream, aggregation=agg.min("x"), windows=windows,
                owner="t", description="d"),
        Feature("mxn", entity=user, stream=stream, aggregation=agg.max("n"), windows=windows,
                where=col("x") < 1, owner="t", description="d"),
        # not numbers: the join, beside them
        Feature("mnote", entity=user, stream=stream, aggregation=agg.min("note"),
                windows=["2d"], owner="t", description="d"),
    ]  # fmt: skip


def _history(stream: Stream, rng: np.random.Generator, n: int, partition: int, start: int,
             coarse: bool, users: int) -> pa.Table:  # fmt: skip
    step = MINUTE if coarse else 1  # coarse times make ties (the same event time) frequent
    times = T0 + rng.integers(0, 5 * DAY // step, n) * step
    uids = rng.integers(0, users, n)
    keys = [f"u{u}" for u in uids] if stream.fields["uid"].dtype.value == "string" else uids
    columns = {
        "_offset": np.arange(start, start + n),
        "_event_id": [f"e{partition}-{start + i}" for i in range(n)],
        "_event_time": times,
        "_ingest_time": times,
        "_partition": np.full(n, partition, dtype=np.int32),
        "uid": keys,
        "x": rng.integers(-8, 8, n) / 4,
        "k": rng.integers(0, 1000, n),
        "n": [None if i % 4 == 0 else int(v) for i, v in enumerate(rng.integers(-5, 9, n))],
        "note": [None if i % 3 else f"n{i}" for i in range(n)],
        "ts": times,
    }
    return pa.table(columns, schema=history_schema(stream))


class Setting:
    """A parquet history of two log partitions, the catalog and one DuckDB connection."""

    def __init__(self, root: Path, key_type: str, coarse: bool, seed: int) -> None:
        self.stream = _stream(key_type)
        self.rng = np.random.default_rng(seed)
        self.coarse = coarse
        self.store = ParquetOfflineStore(root)
        self.catalog = FeatureCatalog(_features(self.stream), [])
        res = self.catalog.resolve([c.name for f in _features(self.stream) for c in f.columns])
        [(plan_id, self.columns)] = res.columns.items()
        self.plan = self.catalog.plan(plan_id)
        self.ends = {0: 0, 1: 0}
        self.con = duckdb.connect()

    def append(self, partition: int, n: int) -> None:
        start = self.ends[partition]
        table = _history(self.stream, self.rng, n, partition, start, self.coarse, users=40)
        self.store.append("stats", table, start, start + n, partition)
        self.ends[partition] = start + n

    def spine(self, n: int) -> tuple[pa.Table, np.ndarray]:
        uids = self.rng.integers(0, 45, n)  # some keys the history does not hold
        keys = (
            [f"u{u}" for u in uids] if self.stream.fields["uid"].dtype.value == "string" else uids
        )
        times = T0 + self.rng.integers(-HOUR // MINUTE, 6 * DAY // MINUTE, n) * MINUTE
        times[: n // 4] += self.rng.integers(0, 2, n // 4)  # a microsecond after an event
        return pa.table({"uid": keys}), times

    def values(
        self, latest: SortedView | None, snapshot: dict[str, int] | None = None
    ) -> tuple[pa.Table, pa.Table]:
        """The values through ``latest`` and through the join alone, for one random spine."""
        spine, times = self.spine(500)
        files = self.store.files("stats")
        got = feature_set_values(
            self.con, self.plan, self.columns, spine, times, files, snapshot, latest
        )
        return got, feature_set_values(
            self.con, self.plan, self.columns, spine, times, files, snapshot, None
        )


def _same(got: pa.Table, want: pa.Table) -> None:
    """Equal column by column; floats to 1e-12 (the join and the prefix sums add in different
    orders; the generator's multiples of 0.25 keep most sums exact anyway)."""
    assert got.column_names == want.column_names
    for name in got.column_names:
        a, b = got[name].to_pylist(), want[name].to_pylist()
        if pa.types.is_floating(want[name].type):
            assert [v is None for v in a] == [v is None for v in b], name
            assert [v for v in a if v is not None] == pytest.approx(
                [v for v in b if v is not None], rel=1e-12
            ), name
        else:
            assert got[name].type == want[name].type and a == b, name


@pytest.mark.parametrize(
    ("key_type", "coarse", "seed"), [("int", True, 1), ("string", True, 2), ("int", False, 3)]
)
def test_the_copy_and_the_rows_archived_since_answer_as_the_join(
    tmp_path, monkeypatch, key_type, coarse, seed
):
    joins: list[list[str]] = []  # the columns of each call of the join of every event
    join = batch._ranged_values

    def watched(con, plan, columns, *rest):
        joins.append(sorted(c.name for c in columns))
        return join(con, plan, columns, *rest)

    monkeypatch.setattr(batch, "_ranged_values", watched)
    s = Setting(tmp_path, key_type, coarse, seed)
    s.append(0, 3000)
    s.append(1, 2000)
    assert refresh(s.store, s.stream, s.ends)
    run = read_run(s.store, s.stream)
    assert run is not None and run.covered == {0: 3000, 1: 2000}
    assert len(run.pos) == 5000
    got, want = s.values(SortedView.open(s.con, s.store, s.stream, None))
    _same(got, want)
    # with the view, only what prefix sums cannot answer is joined; without it, all of it
    assert joins[0] == ["mnote_2d"] and len(joins[1]) == 35
    assert sum(v is not None for v in got["lx_2d"].to_pylist()) > 100  # not all null

    s.append(1, 600)  # archived after the copy was written: searched in memory
    s.append(0, 500)
    assert not refresh(s.store, s.stream, s.ends)  # 1,100 rows behind 5,000: not yet
    latest = SortedView.open(s.con, s.store, s.stream, None)
    assert latest is not None and [len(r.pos) for r in latest.runs] == [5000, 1100]
    got, want = s.values(latest)
    _same(got, want)

    # a snapshot at or past the copy's offsets reads the copy and part of the rest
    snapshot = {"stats": 3200, "stats@p1": 2000}
    latest = SortedView.open(s.con, s.store, s.stream, snapshot)
    assert latest is not None and [len(r.pos) for r in latest.runs] == [5000, 200]
    got, want = s.values(latest, snapshot)
    _same(got, want)
    # pinned to a snapshot, what prefix sums would round differently comes from the join
    windows = ["1h", "2d", "lifetime"]
    assert joins[-2] == sorted(
        ["mnote_2d"] + [f"{n}_{w}" for n in ("mn", "mx", "sx") for w in windows]
    )
    # an older one hides the copy's rows at or past its offsets
    older = {"stats": 2999, "stats@p1": 2600}
    view = SortedView.open(s.con, s.store, s.stream, older)
    assert view is not None and [len(r.pos) for r in view.runs] == [5000, 600]
    assert view.hidden[0] is not None and view.hidden[1] is None
    got, want = s.values(view, older)
    _same(got, want)
    assert joins[-2] == joins[-4]  # the same columns as above went to the join
    older = {"stats": 1000}  # none of partition 1: the copy shows its first 1,000 rows
    got, want = s.values(SortedView.open(s.con, s.store, s.stream, older), older)
    _same(got, want)
    assert sum(v is not None for v in got["lx_lifetime"].to_pylist()) > 100


def test_the_copy_is_rebuilt_once_a_quarter_of_its_rows_came_after_it(tmp_path):
    s = Setting(tmp_path, "int", True, 4)
    s.append(0, 4000)
    assert refresh(s.store, s.stream, s.ends)
    assert not refresh(s.store, s.stream, s.ends)  # nothing new
    s.append(0, 4000 // REBUILD_SHARE - 1)
    assert not refresh(s.store, s.stream, s.ends)
    s.append(0, 1)
    assert refresh(s.store, s.stream, s.ends)
    assert read_run(s.store, s.stream).covered == {0: 5000, 1: 0}
    assert len(s.store.files("stats", since={0: 5000})) == 0
    assert s.store.files("stats", since={0: 4999}) != []


def test_a_copy_made_for_other_fields_is_not_used(tmp_path):
    s = Setting(tmp_path, "int", True, 5)
    s.append(0, 100)
    assert refresh(s.store, s.stream, s.ends)
    changed = Stream(
        "stats",
        fields={"uid": "int", "x": "float", "k": "int", "y": "int", "ts": "timestamp"},
        key="uid", time="ts", required=["x", "k", "y"], owner="t", description="d",
    )  # fmt: skip
    assert read_run(s.store, changed) is None
    assert refresh(s.store, changed, s.ends, force=True)
    assert read_run(s.store, changed) is not None


def _brute_last(keys, times, query_keys, query_times):
    """Row of the latest (time, then row order) event of each key before each time, or -1."""
    out = []
    for k, t in zip(query_keys, query_times, strict=True):
        rows = [i for i in range(len(keys)) if keys[i] == k and times[i] < t]
        out.append(max(rows, key=lambda i: (times[i], i)) if rows else -1)
    return out


@pytest.mark.parametrize("spread", [False, True])
def test_searches_find_the_latest_event_before_each_time(spread):
    """Both forms of slots: whole multiples of a unit, and ranks among distinct times where
    keys times the span would not fit an int64 (microseconds over millennia)."""
    rng = np.random.default_rng(7)
    n = 400
    keys = rng.integers(0, 7, n)
    if spread:
        times = rng.integers(0, 1 << 61, n)
        times[:50] = times[50:100]  # ties
    else:
        times = T0 + rng.integers(0, 300, n) * 1000
    table = pa.table(
        {"uid": keys, "_event_time": times, "_offset": np.arange(n), "_partition": np.zeros(n)}
    )
    run = sort_rows(table, ["uid"], {})
    assert run is not None and (run.unit == 0) == spread
    assert np.all(np.diff(run.pos) >= 0)
    query_keys = rng.integers(0, 9, 300)
    query_times = np.concatenate([rng.choice(times, 200) + rng.integers(0, 2, 200),
                                  [times.min(), times.max() + 1] * 50])  # fmt: skip
    rank = run.ranks(pa.table({"uid": query_keys}))
    ends, firsts = run.ends(rank, query_times), run.ends(rank, None)
    rows = np.where(ends > firsts, ends - 1, -1)  # the row before the end, if the key's
    offsets = [int(run.table["_offset"][int(r)].as_py()) if r >= 0 else -1 for r in rows]
    assert offsets == _brute_last(keys, times, query_keys, query_times)


def test_an_empty_history_has_an_empty_copy(tmp_path):
    stream = _stream("int")
    store = ParquetOfflineStore(tmp_path)
    run = sort_rows(history_schema(stream).empty_table(), ["uid"], {})
    assert run is not None
    assert run.ends(run.ranks(pa.table({"uid": [1, 2]})), np.array([T0, T0])).tolist() == [0, 0]
    assert not refresh(store, stream, {0: 0})


@pytest.mark.parametrize("root", ["local", "memory://sorted-history-test"])
def test_stores_publish_and_replace_each_copy(tmp_path, root):
    store = ParquetOfflineStore(tmp_path / "offline" if root == "local" else root)
    assert store.read_sorted("s", "k") is None and store.sorted_about("s", "k") is None
    store.write_sorted("s", "k", pa.table({"a": [1, 2]}), {"n": 1})
    store.write_sorted("s", "k+j", pa.table({"a": [4]}), {"n": 3})
    store.write_sorted("s", "k", pa.table({"a": [3]}), {"n": 2})
    table, about = store.read_sorted("s", "k")
    assert table.to_pydict() == {"a": [3]} and about == {"n": 2}
    assert store.sorted_about("s", "k") == {"n": 2} and store.sorted_about("s", "k+j") == {"n": 3}
    assert store.read_sorted("s", "k+j")[0].to_pydict() == {"a": [4]}
    if root == "local":  # one file a copy: the replaced one is gone
        assert len(list((tmp_path / "offline" / "stream=s" / "_sorted").iterdir())) == 2


def test_the_unnamed_copy_of_earlier_versions_is_removed(tmp_path):
    store = ParquetOfflineStore(tmp_path)
    folder = tmp_path / "stream=s"
    (folder / "_sorted").mkdir(parents=True)
    (folder / "_sorted" / "sorted-1.arrow").write_bytes(b"old")
    (folder / "_sorted.json").write_text('{"file": "sorted-1.arrow"}')
    store.write_sorted("s", "k", pa.table({"a": [1]}), {})
    assert sorted(f.name for f in (folder / "_sorted").iterdir())[0].startswith("k-")
    assert len(list((folder / "_sorted").iterdir())) == 1 and not (folder / "_sorted.json").exists()


PROJECT = """
from headwater import Entity, Feature, Stream, agg

user = Entity("user", keys="uid", owner="t", description="d")
stats = Stream("stats", fields={"uid": "int", "x": "float", "ts": "timestamp"}, key="uid",
               time="ts", required=["x"], owner="t", description="d")
features = [Feature("lx", entity=user, stream=stats, aggregation=agg.last("x"),
                    windows=["1d"], owner="t", description="d")]
"""


@pytest.mark.parametrize("enabled", [True, False])
def test_projects_keep_a_copy_unless_told_not_to(project_factory, enabled):
    folder = project_factory(PROJECT)
    if not enabled:
        with (folder / "headwater.toml").open("a") as toml:
            toml.write("[offline]\nsorted_history = false\n")
    day = 86_400_000_000
    with Project(folder, clock=lambda: T0 + 10 * day) as p:
        events = [
            {"uid": i % 3, "x": float(i), "ts": from_micros(T0 + i * HOUR)} for i in range(30)
        ]
        assert p.ingest("stats", events).accepted == 30
        spine = pa.table(
            {"uid": [0, 1, 2, 3], "timestamp": pa.array([T0 + day] * 4, pa.timestamp("us", "UTC"))}
        )
        got = p.training_set(spine, ["lx_1d"], output="arrow")
        assert got["lx_1d"].to_pylist() == [21.0, 22.0, 23.0, None]
        assert (p.offline_store.read_sorted("stats", "uid") is not None) == enabled


def test_a_bad_setting_is_refused(project_factory):
    folder = project_factory(PROJECT)
    with (folder / "headwater.toml").open("a") as toml:
        toml.write('[offline]\nsorted_history = "yes"\n')
    with pytest.raises(Exception, match="sorted_history must be true or false"):
        Project(folder)


def test_a_history_too_large_for_memory_is_not_sorted(tmp_path, monkeypatch, caplog):
    s = Setting(tmp_path, "int", True, 6)
    s.append(0, 1000)
    monkeypatch.setattr(sorted_history, "memory_bytes", lambda: 2 * 1000 * 100)
    assert not refresh(s.store, s.stream, s.ends)
    assert "not sorting its history (1,000 rows" in caplog.text
    assert read_run(s.store, s.stream) is None
    monkeypatch.undo()
    assert refresh(s.store, s.stream, s.ends)


def test_a_copy_left_far_behind_gives_way_to_the_join(tmp_path):
    s = Setting(tmp_path, "int", True, 7)
    s.append(0, 300)
    assert refresh(s.store, s.stream, s.ends)
    s.append(0, 301)  # more rows since the copy than in it (its rebuild was refused)
    assert SortedView.open(s.con, s.store, s.stream, None) is None
    s.append(1, 10)
    assert refresh(s.store, s.stream, s.ends)
    latest = SortedView.open(s.con, s.store, s.stream, None)
    assert latest is not None and [len(r.pos) for r in latest.runs] == [611]


def test_min_and_max_over_too_many_rows_are_left_to_the_join(tmp_path, monkeypatch):
    s = Setting(tmp_path, "int", True, 8)
    s.append(0, 500)
    assert refresh(s.store, s.stream, s.ends)
    view = SortedView.open(s.con, s.store, s.stream, None)
    spine, times = s.spine(50)
    extremes = [c for c in s.columns if c.aggregation.kind in ("min", "max")]
    numeric = sorted(c.name for c in extremes if c.feature.name != "mnote")  # not strings
    assert sorted(view.values(s.con, extremes, spine, times)) == numeric
    monkeypatch.setattr(sorted_queries, "SCAN_BUDGET", 0)
    assert view.values(s.con, extremes, spine, times) == {}
    got, want = s.values(view)
    _same(got, want)


PAIRS = """
from headwater import Entity, Feature, Stream, agg

pair = Entity("pair", keys=["uid", "item"], owner="t", description="d")
user = Entity("user", keys="uid", owner="t", description="d")
referrer = Entity("referrer", keys="ref", owner="t", description="d")
views = Stream("views", fields={"uid": "int", "item": "string", "secs": "float", "ref": "string",
                                "ts": "timestamp"},
               key=["uid", "item"], time="ts", required=["secs"], owner="t", description="d")
features = [
    Feature("last_secs", entity=pair, stream=views, aggregation=agg.last("secs"),
            windows=["1d", "lifetime"], owner="t", description="d"),
    Feature("views", entity=pair, stream=views, aggregation=agg.count(), windows=["1d"],
            owner="t", description="d"),
    Feature("user_views", entity=user, stream=views, aggregation=agg.count(), windows=["1d"],
            owner="t", description="d"),
    Feature("referred", entity=referrer, stream=views, aggregation=agg.sum("secs"),
            windows=["lifetime"], owner="t", description="d"),
]
"""


def test_streams_with_several_keys_have_a_copy_keyed_by_all_of_them(project_factory):
    folder = project_factory(PAIRS)
    rng = np.random.default_rng(9)
    day = 86_400_000_000
    events = [
        {"uid": int(rng.integers(0, 5)), "item": f"i{rng.integers(0, 4)}",
         "secs": float(rng.integers(0, 100)), "ts": from_micros(T0 + int(rng.integers(0, 3 * day))),
         "ref": None if rng.random() < 0.3 else f"r{rng.integers(0, 3)}"}
        for _ in range(400)
    ]  # fmt: skip
    names = ["last_secs_1d", "last_secs_lifetime", "views_1d", "user_views_1d", "referred_lifetime"]
    spine = pa.table({
        "uid": rng.integers(0, 6, 300),
        "item": [f"i{i}" for i in rng.integers(0, 5, 300)],
        "ref": [f"r{i}" for i in rng.integers(0, 4, 300)],
        "timestamp": pa.array(T0 + rng.integers(0, 4 * day, 300), pa.timestamp("us", "UTC")),
    })  # fmt: skip
    answers = []
    for enabled in (True, False):
        with Project(folder, clock=lambda: T0 + 10 * day) as p:
            if not answers:
                assert p.ingest("views", events).accepted == 400
            p.training = TrainingSets.over(p.catalog, p.offline_store, p.archiver,
                                      p.definitions.streams, sorted_history=enabled)  # fmt: skip
            answers.append(p.training_set(spine, names, output="arrow"))
            if enabled:  # a copy for each entity's keys
                users = read_run(p.offline_store, p.definitions.streams["views"], ["uid"])
                assert users is not None and users.keys.num_rows == 5
                # events without a referrer belong to none: not in the copy by referrer
                refs = read_run(p.offline_store, p.definitions.streams["views"], ["ref"])
                assert refs is not None and refs.keys.num_rows == 3 and len(refs.pos) < 400
                run = read_run(p.offline_store, p.definitions.streams["views"])
                assert run is not None and run.keys_ == ("uid", "item")
                assert run.keys.num_rows == 20  # 5 users x 4 items, all seen
                rows = pa.table({"uid": [0, 9, 0], "item": ["i0", "i0", "i9"]})
                assert (run.ranks(rows) >= 0).tolist() == [True, False, False]
    assert answers[0].to_pylist() == answers[1].to_pylist()
    assert sum(v is not None for v in answers[0]["last_secs_1d"].to_pylist()) > 50


def test_archiving_goes_on_when_sorting_fails(tmp_path, monkeypatch, caplog):
    stream = _stream("int")
    log = EmbeddedLog(tmp_path / "log.db")
    store = ParquetOfflineStore(tmp_path / "offline")
    payloads = [orjson.dumps({"uid": i % 3, "x": 1.0, "k": i, "ts": T0 + i}) for i in range(20)]
    log.append("stats", [NewRecord(f"e{i}", T0 + i, p) for i, p in enumerate(payloads)], T0)

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(sorted_history, "refresh", broken)
    assert Archiver(log, store).catch_up(stream) == 20  # archived all the same
    assert "sorting its history failed" in caplog.text and "disk full" in caplog.text
    assert store.committed("stats") == 20


def test_describe_says_what_each_copy_holds(tmp_path):
    s = Setting(tmp_path, "int", True, 10)
    s.append(0, 120)
    s.append(1, 30)
    assert describe_copies(s.store, s.stream, [("uid",)]) == [
        "sorted copy by uid: none yet (the next archive run builds it)"
    ]
    assert refresh(s.store, s.stream, s.ends)
    assert describe_copies(s.store, s.stream, [("uid",)]) == [
        "sorted copy by uid: 150 rows (partition 0 below 120, partition 1 below 30)"
    ]
