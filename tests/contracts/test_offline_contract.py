"""The offline history port's contract (``stores/offline/base.py``), run over every backend: a
new backend is tested by adding one line to ``BACKENDS``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from headwater.history.engines.sql import connect
from headwater.stores.offline.base import OfflineStore
from headwater.stores.urls import open_offline

DAY_US = 86_400_000_000
BACKENDS: dict[str, Callable[[Path], str]] = {
    "local folder": lambda tmp: f"file://{tmp}/offline",
    "fsspec memory://": lambda tmp: f"memory://offline-{uuid.uuid4().hex}/history",
}


@pytest.fixture(params=sorted(BACKENDS))
def store(request, tmp_path: Path) -> OfflineStore:
    return open_offline(BACKENDS[request.param](tmp_path), tmp_path)


def rows(offsets: range, days: int = 1) -> pa.Table:
    return pa.table(
        {
            "_offset": pa.array(list(offsets), pa.int64()),
            "_event_time": pa.array([(i % days) * DAY_US + i for i in offsets], pa.int64()),
            "amount": pa.array([float(i) for i in offsets]),
        }
    )


def read(store: OfflineStore, stream: str, since: dict[int, int] | None = None) -> list[int]:
    files = store.files(stream, since)
    if not files:
        return []
    with connect(store) as con:
        found = con.sql("SELECT _offset FROM read_parquet($f)", params={"f": files}).fetchall()
    return sorted(r[0] for r in found)


def test_appends_are_committed_with_their_offsets(store):
    assert store.committed("s") == 0 and store.files("s") == []
    store.append("s", rows(range(0, 5), days=2), 0, 5)
    store.append("s", rows(range(5, 9), days=2), 5, 9)
    assert store.committed("s") == 9
    assert read(store, "s") == list(range(9))


def test_an_empty_append_moves_the_offset_only(store):
    store.append("s", rows(range(0, 0)), 0, 4)
    assert store.committed("s") == 4 and read(store, "s") == []


def test_partitions_commit_apart(store):
    store.append("s", rows(range(0, 3)), 0, 3, partition=0)
    store.append("s", rows(range(0, 2)), 0, 2, partition=1)
    assert (store.committed("s", 0), store.committed("s", 1)) == (3, 2)
    assert read(store, "s") == [0, 0, 1, 1, 2]


def test_files_since_an_offset_hold_every_row_past_it(store):
    for start in range(0, 40, 10):
        store.append("s", rows(range(start, start + 10)), start, start + 10)
    since = read(store, "s", {0: 25})
    assert set(range(25, 40)) <= set(since) and len(since) < 40


def test_an_interrupted_append_is_invisible_and_written_again(store, monkeypatch):
    store.append("s", rows(range(0, 3)), 0, 3)
    files = store._files  # type: ignore[attr-defined]
    publish = files.publish

    def die_at_the_marker(path: str, data: bytes) -> None:
        if path.rsplit("/", 1)[-1].startswith("_committed"):
            raise OSError("the archiver died")
        publish(path, data)

    monkeypatch.setattr(files, "publish", die_at_the_marker)
    with pytest.raises(OSError, match="died"):
        store.append("s", rows(range(3, 6)), 3, 6)
    monkeypatch.undo()
    assert store.committed("s") == 3 and read(store, "s") == [0, 1, 2]
    store.append("s", rows(range(3, 7)), 3, 7)
    assert read(store, "s") == list(range(7))


def test_compaction_keeps_every_row_once(store):
    for start in range(0, 60, 5):
        store.append("s", rows(range(start, start + 5), days=3), start, start + 5)
    before = len(store.files("s"))
    assert store.compact("s") > 0
    assert len(store.files("s")) < before
    assert read(store, "s") == list(range(60))


def test_a_sorted_copy_is_replaced_whole(store):
    assert store.read_sorted("s", "user_id") is None and store.sorted_about("s", "user_id") is None
    first = pa.table({"_pos": [1, 2, 3]})
    store.write_sorted("s", "user_id", first, {"rows": 3})
    store.write_sorted("s", "user_id+item_id", pa.table({"_pos": [9]}), {"rows": 1})
    second = pa.table({"_pos": [1, 2, 3, 4]})
    store.write_sorted("s", "user_id", second, {"rows": 4})
    table, about = store.read_sorted("s", "user_id")
    assert table.equals(second) and about == {"rows": 4}
    assert store.sorted_about("s", "user_id") == {"rows": 4}
    assert store.read_sorted("s", "user_id+item_id")[1] == {"rows": 1}
