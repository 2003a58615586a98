"""The Spark engine builds the same training sets as DuckDB, which equal a brute force.

One local Spark session (two cores, two shuffle partitions) serves the whole module.
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
from pathlib import Path

import fsspec
import orjson
import pandas as pd
import pyarrow as pa

# pyspark comes with the dev extra and Java 17 is on every machine of this project: either
# missing fails these tests, never skips them
import pyspark  # noqa: E402, F401
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from headwater.definitions.windows import DAY, HOUR, MINUTE
from headwater.features.catalog import FeatureCatalog
from headwater.history.archiver import Archiver
from headwater.history.schema import records_to_table
from headwater.log.base import Record
from headwater.project.config import ConfigError, load_settings
from headwater.stores.offline.parquet import ParquetOfflineStore
from headwater.training.sets import EngineError, TrainingSets
from tests import oracle
from tests.conftest import SPARK
from tests.unit.features.test_consistency import (
    BY_NAME,
    DERIVED,
    FEATURES,
    KEYS,
    NAMES,
    SPAN,
    T0,
    Engines,
    _raw,
    event_strategy,
    stream,
)

if shutil.which("java") is None:
    pytest.fail("the Spark engine needs Java 17 or 21 on PATH", pytrace=False)

from headwater.history.engines import spark as spark_engine  # noqa: E402
from headwater.history.engines import spark_sql  # noqa: E402
from headwater.history.engines.spark import SparkEngineError, SparkSettings, spark_session  # noqa: E402

SETTINGS = SPARK


@pytest.fixture(scope="module", autouse=True)
def spark():
    session = spark_session(SETTINGS)
    yield session
    session.stop()


def engines(folder: Path) -> Engines:
    """The parity test's wiring, archiving in the default (large) batches: few files."""
    eng = Engines(folder)
    archiver = Archiver(eng.log, eng.offline_store)
    eng.training = TrainingSets.over(
        eng.catalog, eng.offline_store, archiver, {stream.name: stream}, spark=SETTINGS
    )
    return eng


def assert_same(spark: pa.Table, duck: pa.Table) -> None:
    """Identical frames: same columns and types, equal values (floats within 1e-9)."""
    assert spark.schema == duck.schema
    for name in duck.column_names:
        for i, (a, b) in enumerate(
            zip(spark[name].to_pylist(), duck[name].to_pylist(), strict=True)
        ):
            assert oracle.same(a, b), f"{name} row {i}: spark {a!r}, duckdb {b!r}"


def assert_brute_force(table: pa.Table, logged: list, names: list[str]) -> None:
    for row in table.to_pylist():
        t = int(pd.Timestamp(row["timestamp"]).value // 1000)
        key = {"account_id": row["account_id"]}
        for name in names:
            want = oracle.evaluate(BY_NAME[name], logged, key, t)
            assert oracle.same(row[name], want), f"{name} at {t - T0} {key}: {row[name]!r}"


def spine_at(times: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_id": [k for t in times for k in [*KEYS, "nobody"]],
            "timestamp": pd.to_datetime(
                [t for t in times for _ in range(len(KEYS) + 1)], unit="us", utc=True
            ),
            "scale": 2.0,
        }
    )


def ingest_shuffled(eng: Engines, events: list[dict], seed: int) -> None:
    """Ingest in a random order: many events arrive after later ones (late events)."""
    rnd = random.Random(seed)
    events = list(events)
    rnd.shuffle(events)
    eng.now = T0 + SPAN + 2 * DAY
    for i in range(0, len(events), 50):
        assert not eng.ingestor.ingest(stream.name, [_raw(e) for e in events[i : i + 50]]).rejected


def random_events(rnd: random.Random, n: int) -> list[dict]:
    """Like the parity test's generator: nulls, ties on coarse times, exact tile edges."""

    def maybe(value):
        return None if rnd.random() < 0.15 else value

    out = []
    for _ in range(n):
        coarse = rnd.random() < 0.6
        ts = T0 + (rnd.randrange(SPAN // MINUTE) * MINUTE if coarse else rnd.randrange(SPAN))
        out.append(
            {
                "account_id": rnd.choice(KEYS),
                "x": maybe(rnd.randint(-400, 400) / 4),
                "n": maybe(rnd.randint(-5, 9)),
                "cat": maybe(rnd.choice("abc")),
                "k": rnd.randint(0, 3),
                "ts": ts,
            }
        )
    return out


def test_spark_equals_duckdb_equals_brute_force():
    rnd = random.Random(7)
    events = random_events(rnd, 400)
    # query times: random, exactly at events (not visible yet), and on hop edges
    times = [T0 + rnd.randrange(SPAN + DAY) for _ in range(8)]
    times += [e["ts"] for e in events[:4]] + [T0 + 13 * HOUR, T0 + DAY + 5 * MINUTE]
    with tempfile.TemporaryDirectory() as tmp:
        eng = engines(Path(tmp))
        ingest_shuffled(eng, events, seed=1)
        spine = spine_at(sorted(times))
        duck = eng.training.build(spine, [*NAMES, "ratio"], engine="duckdb")
        spark = eng.training.build(spine, [*NAMES, "ratio"], engine="spark")
        assert_same(spark, duck)
        assert_brute_force(spark, eng.logged(), NAMES)
        eng.close()


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,  # a fixed seed: the same examples in every run of CI
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    events=st.lists(event_strategy, min_size=0, max_size=40),
    query_offsets=st.lists(st.integers(1, SPAN + DAY), min_size=1, max_size=3, unique=True),
    seed=st.integers(0, 2**32 - 1),
)
@example(events=[], query_offsets=[DAY], seed=0)  # no history at all
def test_spark_equals_duckdb_on_generated_event_sets(events, query_offsets, seed):
    names = ["cnt_10m", "sn_13h", "vx_1h", "lk_paid_2d", "lk_lifetime", "cd_2d", "fc_lifetime"]
    with tempfile.TemporaryDirectory() as tmp:
        eng = engines(Path(tmp))
        ingest_shuffled(eng, events, seed)
        spine = spine_at(sorted(T0 + q for q in query_offsets))
        spark = eng.training.build(spine, names, engine="spark")
        assert_same(spark, eng.training.build(spine, names, engine="duckdb"))
        assert_brute_force(spark, eng.logged(), names)
        eng.close()


class _Archived:
    """An archiver with nothing left to archive: the test writes the history itself."""

    def catch_up(self, stream, progress=None) -> int:
        return 0


def test_a_snapshot_keeps_each_partition_below_its_offset():
    """Two log partitions (keys k0, k1 in p0; k2, k3 in p1) and a snapshot of both."""
    rnd = random.Random(11)
    events = random_events(rnd, 200)
    with tempfile.TemporaryDirectory() as tmp:
        store = ParquetOfflineStore(Path(tmp) / "offline")
        logged: dict[int, list[tuple[int, int, dict]]] = {0: [], 1: []}
        for e in events:
            partition = KEYS.index(e["account_id"]) // 2
            logged[partition].append((e["ts"], len(logged[partition]), e))
        for partition, rows in logged.items():
            records = [
                Record(off, f"e{partition}-{off}", ts, T0 + SPAN, orjson.dumps(row), partition)
                for ts, off, row in rows
            ]
            for start in range(0, len(records), 30):  # several files per partition
                batch = records[start : start + 30]
                table = records_to_table(stream, batch)
                store.append(stream.name, table, start, start + len(batch), partition)
        training = TrainingSets.over(
            FeatureCatalog(FEATURES, [DERIVED]),
            store,
            _Archived(),  # type: ignore[arg-type]
            {stream.name: stream},
            engine="spark",
            spark=SETTINGS,
        )
        snapshot = {stream.name: 61, f"{stream.name}@p1": 17}
        spine = spine_at([T0 + SPAN // 2, T0 + SPAN + DAY])
        spark = training.build(spine, [*NAMES, "ratio"], snapshot=snapshot)
        duck = training.build(spine, [*NAMES, "ratio"], snapshot=snapshot, engine="duckdb")
        assert_same(spark, duck)
        visible = [r for r in logged[0] if r[1] < 61] + [r for r in logged[1] if r[1] < 17]
        assert_brute_force(spark, visible, NAMES)
        everything = training.build(spine, ["cnt_lifetime"], engine="duckdb")["cnt_lifetime"]
        assert spark["cnt_lifetime"].to_pylist() != everything.to_pylist()


def test_history_on_an_fsspec_url_reaches_spark_through_the_driver():
    with tempfile.TemporaryDirectory() as tmp:
        eng = engines(Path(tmp))
        memory = ParquetOfflineStore("memory://spark-test/offline")
        training = TrainingSets.over(
            eng.catalog, memory, Archiver(eng.log, memory), {"txns": stream}
        )
        ingest_shuffled(eng, random_events(random.Random(3), 120), seed=3)
        spine = spine_at([T0 + DAY, T0 + SPAN])
        spark = training.build(spine, NAMES, engine="spark")
        assert memory.files(stream.name)[0].startswith("memory://")
        assert_same(spark, training.build(spine, NAMES, engine="duckdb"))
        assert_brute_force(spark, eng.logged(), NAMES)
        eng.close()
    fsspec.filesystem("memory").rm("/spark-test", recursive=True)


def test_what_the_spark_engine_cannot_do_is_refused_with_the_reason(monkeypatch):
    with tempfile.TemporaryDirectory() as tmp:
        eng = engines(Path(tmp))
        spine = spine_at([T0 + DAY])
        with pytest.raises(EngineError, match="unknown training-set engine 'polars'"):
            eng.training.build(spine, ["cnt_1h"], engine="polars")
        # An aggregation the engine would not compute is named before Spark does any work.
        monkeypatch.setattr(spark_sql, "SUPPORTED", spark_sql.SUPPORTED - {"last_k"})
        with pytest.raises(SparkEngineError, match="'lk_1h': the spark engine has no 'last_k'"):
            eng.training.build(spine, ["cnt_1h", "lk_1h"], engine="spark")
        monkeypatch.setitem(sys.modules, "pyspark.sql", None)  # as if pyspark were missing
        fresh = TrainingSets.over(
            eng.catalog, eng.offline_store, eng.training._archiver, {"txns": stream}
        )
        with pytest.raises(SparkEngineError, match=r'pip install "headwater\[spark\]"'):
            fresh.build(spine, ["cnt_1h"], engine="spark")
        eng.close()


def test_the_engine_is_a_project_setting(tmp_path):
    (tmp_path / "headwater.toml").write_text(
        '[offline]\nengine = "spark"\n[offline.spark]\nmaster = "local[2]"\n'
        '[offline.spark.conf]\n"spark.sql.shuffle.partitions" = 4\n'
        '"spark.sql.adaptive.enabled" = false\n'
    )
    offline = load_settings(tmp_path).offline
    assert offline.engine == "spark"
    assert offline.spark == SparkSettings(
        "local[2]",
        (("spark.sql.shuffle.partitions", "4"), ("spark.sql.adaptive.enabled", "false")),
    )
    (tmp_path / "headwater.toml").write_text('[offline]\nengine = "hive"\n')
    with pytest.raises(ConfigError, match='engine must be "duckdb" or "spark"'):
        load_settings(tmp_path)


def test_a_project_with_the_spark_engine_builds_its_training_sets_with_spark(tmp_path, monkeypatch):
    from headwater import Project
    from tests.conftest import SMALL_DEFINITIONS, write_project

    folders = {}
    for engine in ("duckdb", "spark"):
        folder = write_project(tmp_path / engine, SMALL_DEFINITIONS)
        toml = folder / "headwater.toml"
        toml.write_text(toml.read_text() + f'[offline]\nengine = "{engine}"\n')
        folders[engine] = folder
    used: list[int] = []
    original = spark_engine.SparkEngine.feature_values
    monkeypatch.setattr(
        spark_engine.SparkEngine,
        "feature_values",
        lambda self, *a, **k: used.append(1) or original(self, *a, **k),
    )
    end = pd.Timestamp("2026-01-10", tz="UTC")
    orders = [
        {
            "user_id": f"u{i % 5}",
            "amount": float(i),
            "status": "paid" if i % 3 else "failed",
            "ts": end - pd.Timedelta(hours=i),
        }
        for i in range(60)
    ]
    spine = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(5)] * 2,
            "timestamp": [end - pd.Timedelta(hours=h) for h in (0, 0, 0, 0, 0, 30, 30, 30, 30, 30)],
        }
    )
    frames = {}
    for engine, folder in folders.items():
        with Project(folder, clock=lambda: end) as p:
            p.ingest("orders", orders)
            frames[engine] = p.training_set(spine, ["spend_7d", "spend_lifetime"])
    assert used, "the spark project did not use the Spark engine"
    pd.testing.assert_frame_equal(frames["duckdb"], frames["spark"], check_exact=False, rtol=1e-9)
