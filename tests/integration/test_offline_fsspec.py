"""The offline store at fsspec URLs: archive, commit and build training sets end to end.

fsspec's in-process ``memory://`` filesystem stands in for an object store (it has no atomic
rename either); no S3-compatible server runs here, so ``s3://`` is only checked for its error.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pytest

from headwater import Project
from headwater.history.engines.sql import connect
from headwater.stores.offline.parquet import ParquetOfflineStore
from headwater.stores.urls import BackendError, open_backend

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVENTS = pd.DataFrame(
    {
        "user_id": ["a", "a", "b", "a", "b"],
        "amount": [1.0, 2.0, 4.0, 8.0, 16.0],
        "status": ["paid", "paid", "paid", "failed", None],
        "ts": [
            NOW - timedelta(days=3),
            NOW - timedelta(minutes=30),
            NOW - timedelta(hours=2),
            NOW - timedelta(minutes=5),
            NOW - timedelta(days=9),
        ],
    }
)
SPINE = pd.DataFrame(
    {
        "user_id": ["a", "a", "b", "c"],
        "timestamp": [NOW, NOW - timedelta(hours=1), NOW, NOW],
    }
)
NAMES = ["spend_1h", "spend_7d", "spend_lifetime"]


@pytest.fixture
def memory_url():
    """A fresh folder of the process-wide memory filesystem, removed afterwards."""
    folder = f"/headwater-test-{uuid.uuid4().hex}"
    yield f"memory://{folder}/offline"
    fs = fsspec.filesystem("memory")
    if fs.exists(folder):
        fs.rm(folder, recursive=True)


def _training_set(folder: Path, offline_url: str | None) -> pa.Table:
    if offline_url is not None:
        with (folder / "headwater.toml").open("a") as f:
            f.write(f'[stores]\noffline = "{offline_url}"\n')
    with Project(folder, clock=lambda: NOW) as p:
        assert p.ingest("orders", EVENTS).accepted == len(EVENTS)
        return p.training_set(SPINE, NAMES, output="arrow")


def test_a_memory_url_archives_and_builds_the_same_training_set(project_factory, memory_url):
    from tests.conftest import SMALL_DEFINITIONS

    local = _training_set(project_factory(SMALL_DEFINITIONS), None)
    remote = _training_set(project_factory(SMALL_DEFINITIONS), memory_url)
    assert remote.to_pylist() == local.to_pylist()
    assert remote.select(NAMES).to_pylist()[0] == {
        "spend_1h": 2.0,
        "spend_7d": 3.0,
        "spend_lifetime": 3.0,
    }
    fs = fsspec.filesystem("memory")
    root = memory_url.removeprefix("memory://")
    assert fs.exists(f"{root}/stream=orders/_committed.json")
    assert len(fs.glob(f"{root}/stream=orders/date=*/part-*.parquet")) == 3  # one a day


def test_a_file_url_is_a_local_folder(project_factory, tmp_path):
    from tests.conftest import SMALL_DEFINITIONS

    folder = tmp_path / "history"
    table = _training_set(project_factory(SMALL_DEFINITIONS), f"file://{folder}")
    assert table.select(NAMES).to_pylist()[2]["spend_lifetime"] == 4.0
    store = ParquetOfflineStore(f"file://{folder}")
    files = store.files("orders")
    assert files and all(f.startswith(str(folder)) and Path(f).is_file() for f in files)
    assert not list(folder.rglob("*.tmp"))


def _history(offsets: range) -> pa.Table:
    day = 20_000 * 86_400_000_000
    return pa.table(
        {
            "_offset": pa.array(list(offsets), pa.int64()),
            "_event_time": pa.array([day + i for i in offsets], pa.int64()),
        }
    )


def test_files_become_visible_only_with_the_marker_written_last(memory_url, monkeypatch):
    store = ParquetOfflineStore(memory_url)
    store.append("s", _history(range(0, 3)), 0, 3)
    publish = store._files.publish

    def crash_at_the_marker(path: str, data: bytes) -> None:
        if path.endswith("_committed.json"):
            raise OSError("the archiver died")
        publish(path, data)

    monkeypatch.setattr(store._files, "publish", crash_at_the_marker)
    with pytest.raises(OSError, match="died"):
        store.append("s", _history(range(3, 5)), 3, 5)
    monkeypatch.undo()
    # The part file of the interrupted append is there but not committed: readers skip it.
    assert len(store._parts("s")) == 2
    assert store.committed("s") == 3 and len(store.files("s")) == 1
    # The next append removes it and writes its rows again.
    store.append("s", _history(range(3, 6)), 3, 6)
    assert [f.rsplit("/", 1)[-1] for f in store.files("s")] == [
        "part-0-3.parquet",
        "part-3-6.parquet",
    ]
    with connect(store) as con:  # DuckDB reads the URLs through the store's filesystem
        rows = con.sql("SELECT _offset FROM read_parquet($f)", params={"f": store.files("s")})
        assert sorted(r[0] for r in rows.fetchall()) == list(range(6))


def test_partitions_have_their_own_markers(memory_url):
    store = ParquetOfflineStore(memory_url)
    store.append("s", _history(range(0, 2)), 0, 2, partition=0)
    store.append("s", _history(range(0, 4)), 0, 4, partition=1)
    assert (store.committed("s", 0), store.committed("s", 1)) == (2, 4)
    assert [f.rsplit("/", 1)[-1] for f in store.files("s")] == [
        "part-0-2.parquet",
        "part-p1-0-4.parquet",
    ]


def test_offline_urls_are_chosen_by_scheme(tmp_path, memory_url):
    assert isinstance(open_backend("offline", memory_url, tmp_path), ParquetOfflineStore)
    with pytest.raises(BackendError, match="known schemes: file://, memory://, s3://"):
        open_backend("offline", "ftp://host/offline", tmp_path)


def test_an_object_store_without_its_package_says_what_to_install(tmp_path, monkeypatch):
    # s3fs absent (as here) or made unimportable, and unknown to fsspec's registry
    monkeypatch.setitem(sys.modules, "s3fs", None)
    registry = sys.modules["fsspec.registry"]._registry  # filesystems already imported
    for scheme in ("s3", "s3a"):
        monkeypatch.delitem(registry, scheme, raising=False)
    with pytest.raises(BackendError, match="needs s3fs: pip install s3fs"):
        open_backend("offline", "s3://bucket/offline", tmp_path)


def _day_rows(offsets: range, days: int) -> pa.Table:
    """Rows at the given offsets, spread round-robin over ``days`` days (a backfill out of
    time order: every append touches every day)."""
    day = 86_400_000_000
    return pa.table(
        {
            "_offset": list(offsets),
            "_event_time": [(o % days) * day + o for o in offsets],
            "x": [float(o) for o in offsets],
        }
    )


def _rows(store: ParquetOfflineStore, stream: str) -> list[int]:
    with connect(store) as con:
        files = store.files(stream)
        found = con.sql("SELECT _offset FROM read_parquet($f)", params={"f": files}).fetchall()
    return sorted(o for (o,) in found)


@pytest.mark.parametrize("where", ["local", "memory"])
def test_compaction_merges_small_files_and_readers_see_each_row_once(where, tmp_path, memory_url):
    store = ParquetOfflineStore(tmp_path / "offline" if where == "local" else memory_url)
    for start in range(0, 100, 10):  # 10 appends x 3 days: 30 files of ~3 rows
        store.append("s", _day_rows(range(start, start + 10), days=3), start, start + 10)
    assert len(store.files("s")) == 30
    listed_before = store.files("s")
    assert store.compact("s", at_least=8) == 30
    assert len(store.files("s")) == 3  # one a day
    assert _rows(store, "s") == list(range(100))
    # the replaced files stay for readers that listed them before, until the grace is over
    assert all(store._files.read_bytes(p.replace("memory://", "")) for p in listed_before)
    assert store.compact("s", at_least=8) == 0  # three files: nothing to merge
    more = range(100, 130)
    for start in range(100, 130, 10):
        store.append("s", _day_rows(range(start, start + 10), days=3), start, start + 10)
    assert _rows(store, "s") == list(range(130))
    # small merged files merge again with the new ones; an appended file's rows stay
    assert store.compact("s", at_least=4) == 12
    assert len(store.files("s")) == 3
    assert _rows(store, "s") == list(range(100)) + list(more)
    store.compact("s", grace_s=0)  # the files merged twice over are removed now
    assert len(store._parts("s")) == 3


def test_compaction_leaves_large_files_and_what_lies_between_them(tmp_path):
    store = ParquetOfflineStore(tmp_path / "offline")
    for start in range(0, 40, 10):
        store.append("s", _day_rows(range(start, start + 10), days=1), start, start + 10)
    assert store.compact("s", small_bytes=1, at_least=2) == 0  # every file counts as large
    assert len(store.files("s")) == 4
    assert store.compact("s", at_least=5) == 0  # too few small files
    assert store.compact("s", at_least=4) == 4
    assert _rows(store, "s") == list(range(40))


def test_the_archiver_compacts_a_backfill(project_factory):
    """Through the project: events archived out of time order, 20 appends each touching all
    5 days, end in one file a day, and the training set is the one of a single append."""
    from tests.conftest import SMALL_DEFINITIONS

    rows = pd.DataFrame(
        {
            "user_id": [f"u{i % 7}" for i in range(400)],
            "amount": [float(i) for i in range(400)],
            "status": ["paid"] * 400,
            "ts": [NOW - timedelta(days=i % 5, minutes=i) for i in range(400)],
        }
    )
    spine = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "timestamp": [NOW] * 3})
    got = []
    for batch in (20, 10_000):
        with Project(project_factory(SMALL_DEFINITIONS), clock=lambda: NOW) as p:
            assert p.ingest("orders", rows).accepted == 400
            p.archiver._batch = batch  # noqa: SLF001 - the size of each append
            assert p.archiver.catch_up(p.definitions.streams["orders"]) == 400
            assert len(p.offline_store.files("orders")) == 5  # one a day
            got.append(p.training_set(spine, NAMES, output="arrow").to_pylist())
    assert got[0] == got[1]
    assert got[0][0]["spend_lifetime"] == sum(float(i) for i in range(400) if i % 7 == 1)
