"""The offline store at fsspec URLs: archive, commit and build training sets end to end.

fsspec's in-process ``memory://`` filesystem stands in for an object store (it has no atomic
rename either); no S3-compatible server runs here, so ``s3://`` is only checked for its error.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import fsspec
import pandas as pd
import pyarrow as pa
import pytest

from headwater import Project
from headwater.backends import BackendError, open_backend
from headwater.stores.offline_parquet import ParquetOfflineStore

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
    con = duckdb.connect()
    store.attach(con)
    store.attach(con)  # idempotent: DuckDB keeps one filesystem per protocol
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
