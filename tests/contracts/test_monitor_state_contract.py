"""The monitor state port's contract (``stores/monitor/base.py``), run over every backend: the
DuckDB file and PostgreSQL (a schema of its own per test, over a real connection). A new
backend is tested by adding one line to ``BACKENDS``.

Beyond the session's semantics, the ledger itself runs on each backend: advanced over the
same log, it holds what the DuckDB ledger holds and reports the same performance.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest

from headwater.definitions.types import to_micros
from headwater.monitoring.ledger import Ledger
from headwater.stores.monitor.base import MonitorStateError, MonitorStore
from headwater.stores.monitor.schema import MIGRATIONS
from headwater.stores.urls import open_monitor
from tests.unit.monitoring.test_incremental import labelled  # noqa: F401  (a fixture)
from tests.unit.training.conftest import NOW

PG = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS: dict[str, Callable[[Path, str], str]] = {
    "duckdb file": lambda tmp, name: f"duckdb://{tmp}/{name}.duckdb",
    "postgresql": lambda tmp, name: f"{PG}?schema={name}",
}


@pytest.fixture(params=sorted(BACKENDS))
def location(request, tmp_path) -> Iterator[Callable[[], MonitorStore]]:
    """Opens stores on one location of the backend (two calls: two holders, as two
    processes would be); a PostgreSQL schema is dropped afterwards."""
    name = f"hw_monitor_{uuid.uuid4().hex[:10]}"
    url = BACKENDS[request.param](tmp_path, name)
    opened: list[MonitorStore] = []

    def open_one() -> MonitorStore:
        opened.append(open_monitor(url, tmp_path))
        return opened[-1]

    yield open_one
    for store in opened:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    if url.startswith("postgresql"):
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def test_a_session_creates_the_tables_once(location):
    store = location()
    with store.session() as con:
        versions = con.rows("SELECT version FROM schema_migrations ORDER BY version")
        assert versions == [(v,) for v in range(1, len(MIGRATIONS) + 1)]
        assert con.rows("SELECT count(*) FROM outcomes") == [(0,)]
    with location().session() as con:  # a second holder finds them, applies nothing again
        assert con.rows("SELECT version FROM schema_migrations ORDER BY version") == versions


def test_a_newer_schema_is_refused_with_what_to_do(location):
    store = location()
    with store.session() as con:
        con.execute("INSERT INTO schema_migrations VALUES (?)", [len(MIGRATIONS) + 1])
    with (
        pytest.raises(MonitorStateError, match="newer than this headwater knows"),
        store.session(),
    ):
        pass


def test_loaded_tables_read_back_with_their_types(location):
    table = pa.table(
        {
            "s": pa.array(["a", None, "c"]),
            "i": pa.array([1, 2, None], pa.int32()),
            "b": pa.array([2**40, -1, 0], pa.int64()),
            "f": pa.array([0.25, None, float("nan")]),
            "t": pa.array([True, False, None]),
        }
    )
    with location().session() as con:
        con.load("_rows", table)
        got = con.arrow("SELECT * FROM _rows ORDER BY b")
        assert got.column_names == ["s", "i", "b", "f", "t"]
        rows = sorted(con.rows("SELECT s, i, b, t FROM _rows"), key=lambda r: r[2])
        assert rows == [(None, 2, -1, False), ("c", None, 0, None), ("a", 1, 2**40, True)]
        floats = sorted(con.rows("SELECT f FROM _rows"), key=repr)
        assert [None if f is None else round(f, 2) for (f,) in floats if f == f] == [0.25, None]
        con.load("_rows", table.slice(0, 1))  # the name now holds the new rows
        assert con.rows("SELECT count(*) FROM _rows") == [(1,)]


def test_a_transaction_lands_whole_or_not_at_all(location):
    store = location()
    with store.session() as con:
        with con.transaction():
            con.execute("INSERT INTO checkpoints VALUES (?, ?)", ["a", 1])
        with pytest.raises(RuntimeError), con.transaction():
            con.execute("INSERT INTO checkpoints VALUES (?, ?)", ["b", 2])
            con.execute(
                "INSERT INTO checkpoints VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET next_offset = excluded.next_offset",
                ["a", 5],
            )
            raise RuntimeError("killed")
    with location().session() as con:
        assert con.rows("SELECT name, next_offset FROM checkpoints") == [("a", 1)]


def test_reset_starts_over_with_empty_tables(location):
    with location().session() as con:
        con.executemany("INSERT INTO log_index VALUES (?, ?, ?, ?)", [(0, 1, 2, 3), (1, 1, 0, 9)])
        con.reset()
        assert con.rows("SELECT count(*) FROM log_index") == [(0,)]
        assert con.rows("SELECT version FROM schema_migrations ORDER BY version") == [
            (v,) for v in range(1, len(MIGRATIONS) + 1)
        ]
        assert con.rows("SELECT count(*) FROM skew") == [(0,)]


def test_one_holder_at_a_time_across_stores(location):
    first, second = location(), location()
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with first.session() as con:
            con.execute("INSERT INTO meta VALUES (?, ?)", ["holder", "first"])
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(10)
    began = time.monotonic()
    with pytest.raises(MonitorStateError, match="busy"), second.session(wait=0.4):
        pass
    assert time.monotonic() - began >= 0.3  # it waited before giving up
    release.set()
    holder.join()
    with second.session(wait=5) as con:
        assert con.rows("SELECT value FROM meta WHERE name = ?", ["holder"]) == [("first",)]


def test_an_unreachable_postgresql_fails_at_open_with_the_url_redacted(tmp_path):
    with pytest.raises(MonitorStateError) as caught:
        open_monitor("postgresql://app:s3cret@127.0.0.1:1/nowhere", tmp_path)
    message = str(caught.value)
    assert "app:***@127.0.0.1:1" in message and "s3cret" not in message
    assert "[stores] monitor" in message


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9)
    return a == b


def test_the_ledger_holds_and_reports_the_same_on_every_backend(labelled, location):  # noqa: F811
    p, _, steps = labelled  # advanced on the default DuckDB file, step by step
    ledger = Ledger(p.monitor_context(), location(), batch=97)
    progress = ledger.advance()
    assert progress.predictions == p.log.end_offset("predictions")
    assert ledger.advance().consumed == 0
    want, got = steps.snapshot(), ledger.snapshot()
    assert set(got) == set(want)
    for table in want:
        assert len(got[table]) == len(want[table]), table
        for row_got, row_want in zip(got[table], want[table], strict=True):
            assert all(map(_same, row_got, row_want)), (table, row_got, row_want)
    window = (to_micros(NOW - timedelta(days=14)), to_micros(NOW))
    for mine, theirs in zip(ledger.performance(*window), steps.performance(*window), strict=True):
        assert (mine.service, mine.day, mine.predictions, mine.labelled) == (
            theirs.service,
            theirs.day,
            theirs.predictions,
            theirs.labelled,
        )
        assert mine.metrics.keys() == theirs.metrics.keys()
        assert all(_same(mine.metrics[k], theirs.metrics[k]) for k in mine.metrics)
    pids = [row[0] for row in want["outcomes"][:20]]
    assert ledger.outcomes(pids).sort_index().equals(steps.outcomes(pids).sort_index())
