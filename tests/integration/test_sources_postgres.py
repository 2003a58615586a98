"""Table sources against a real PostgreSQL: initial load, increments, ties on the cursor across
batch boundaries, restarts, dead letters, the commit delay and definition changes.

PostgreSQL must be reachable at ``PG_URL``; a missing server fails these tests, never skips them.
Each test creates its own uniquely named table and drops it at the end.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from headwater import Project
from headwater.cli import app
from headwater.log.base import DEAD_LETTER_STREAM
from headwater.sources.base import TABLE_POSITIONS
from headwater.sources.table import event_id
from tests.conftest import write_project

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
COLUMNS = {"customer": "user_id", "amount": "amount", "status": "status", "created_at": "ts"}

DEFINITIONS = """
from headwater import Stream, TableSource

orders = Stream(
    "orders",
    fields={{"user_id": "string", "amount": "float", "status": "string", "ts": "timestamp"}},
    key="user_id", time="ts", required=["amount"], owner="payments", description="Orders",
)
orders_db = TableSource(
    "orders_db", stream=orders, url={url!r}, table={table!r}, cursor={cursor!r}, key="id",
    columns={columns!r}, batch_size={batch}, delay={delay!r},
    owner="payments", description="The shop's orders table",
)
"""


@pytest.fixture
def table() -> Iterator[str]:
    name = f"hw_src_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, customer text, amount numeric(10, 2), "
                "status text, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)"
            ).format(sql.Identifier(name))
        )
    yield name
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def _project(
    tmp_path: Path,
    table: str,
    *,
    batch: int = 1000,
    cursor: str = "updated_at",
    delay: str | None = None,
    url: str = PG_URL,
    columns: dict[str, str] | None = COLUMNS,
) -> Path:
    text = DEFINITIONS.format(
        url=url, table=table, cursor=cursor, batch=batch, delay=delay, columns=columns
    )
    folder = tmp_path / "project"
    # a rewrite of the same size within a second would otherwise import the stale bytecode
    shutil.rmtree(folder / "__pycache__", ignore_errors=True)
    return write_project(folder, text)


def _upsert(table: str, *rows: tuple[int, str | None, Any, str, datetime, datetime]) -> None:
    """Insert rows, or update them when the id exists (an update moves updated_at)."""
    query = sql.SQL(
        "INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
        "customer = EXCLUDED.customer, amount = EXCLUDED.amount, status = EXCLUDED.status, "
        "created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at"
    ).format(sql.Identifier(table))
    with psycopg.connect(PG_URL, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(query, rows)


def _row(i: int, updated: datetime, status: str = "paid") -> tuple[Any, ...]:
    return (i, f"u{i % 3}", 10 + i, status, T0 + timedelta(minutes=i), updated)


def _events(project: Project, stream: str = "orders") -> list[dict[str, Any]]:
    return [orjson.loads(r.payload) for r in project.log.read(stream, 0, 100_000)]


def _poll(path: Path, name: str | None = None) -> Any:
    """One poll by a fresh process: a new Project and runner, as after a restart."""
    with Project(path) as project:
        runner = project.source_runner()
        try:
            (result,) = runner.poll([name] if name else None)
        finally:
            runner.close()
        return result


def test_initial_load_then_increments(tmp_path: Path, table: str) -> None:
    path = _project(tmp_path, table, batch=2)
    _upsert(table, *(_row(i, T0 + timedelta(seconds=i)) for i in range(1, 6)))

    first = _poll(path)
    assert (first.read, first.accepted, first.duplicates, first.rejected) == (5, 5, 0, 0)
    assert first.error is None
    assert _poll(path).read == 0  # caught up: nothing new

    # an update moves the row's cursor: a new version, a new event; plus one new row
    _upsert(table, _row(2, T0 + timedelta(minutes=30), "refunded"), _row(6, T0 + timedelta(1)))
    second = _poll(path)
    assert (second.read, second.accepted, second.duplicates) == (2, 2, 0)

    with Project(path) as project:
        events = _events(project)
        doc = project.metadata.get_records(TABLE_POSITIONS)["orders_db"]
    assert [e["status"] for e in events] == ["paid"] * 5 + ["refunded", "paid"]
    first_event = events[0]
    assert first_event["user_id"] == "u1" and first_event["amount"] == 11.0  # numeric -> float
    assert first_event["ts"] == int((T0 + timedelta(minutes=1)).timestamp() * 1_000_000)
    assert first_event["event_id"] == event_id(table, [1], T0 + timedelta(seconds=1))
    assert doc["rows"] == 7 and doc["position"] == [
        {"timestamptz": (T0 + timedelta(1)).isoformat()},
        6,
    ]


def test_ties_on_the_cursor_across_batch_boundaries(tmp_path: Path, table: str) -> None:
    """Seven rows share one updated_at and the batch holds three: (cursor, key) positions
    split the group at any row without losing or repeating one, across polls too."""
    path = _project(tmp_path, table, batch=3)
    same = T0 + timedelta(hours=1)
    _upsert(table, *(_row(i, same) for i in (5, 1, 7, 3, 2, 6, 4)))
    assert _poll(path).read == 7

    # more rows with the very cursor value of the saved position, after its key
    _upsert(table, _row(8, same), _row(9, same), _row(10, same + timedelta(microseconds=1)))
    result = _poll(path)
    assert (result.read, result.accepted, result.duplicates) == (3, 3, 0)

    with Project(path) as project:
        events = _events(project)
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)) == 10
    amounts = [e["amount"] for e in events]
    assert amounts == [10.0 + i for i in range(1, 11)]  # (updated_at, id) order


def test_a_restart_resumes_exactly(tmp_path: Path, table: str, monkeypatch) -> None:
    """Killed after a batch is durable in the log but before its position is saved: the next
    process re-reads that batch, and the log recognizes every event by its id."""
    path = _project(tmp_path, table, batch=4)
    same = T0 + timedelta(hours=2)
    _upsert(table, *(_row(i, same if i < 7 else same + timedelta(seconds=i)) for i in range(10)))

    with Project(path) as project:
        saves = 0
        real_put = project.metadata.put_records

        def put_records(records):  # type: ignore[no-untyped-def]
            nonlocal saves
            saves += 1
            if saves == 2:
                raise KeyboardInterrupt("killed")  # not a HeadwaterError: the process dies
            real_put(records)

        monkeypatch.setattr(project.metadata, "put_records", put_records)
        runner = project.source_runner()
        with pytest.raises(KeyboardInterrupt):
            runner.poll()
        runner.close()
        assert len(_events(project)) == 8  # two batches appended, one position saved

    resumed = _poll(path)
    assert (resumed.read, resumed.accepted, resumed.duplicates) == (6, 2, 4)
    assert _poll(path).read == 0
    with Project(path) as project:
        events = _events(project)
    assert sorted(e["amount"] for e in events) == [10.0 + i for i in range(10)]


def test_bad_rows_are_dead_lettered_with_a_reason(tmp_path: Path, table: str) -> None:
    path = _project(tmp_path, table)
    _upsert(
        table,
        _row(1, T0),
        (2, "u2", None, "paid", T0, T0 + timedelta(seconds=1)),  # amount is required
        (3, None, 5, "paid", T0, T0 + timedelta(seconds=2)),  # no customer: no entity key
        (4, "u4", 5, "paid", datetime(2999, 1, 1, tzinfo=UTC), T0 + timedelta(seconds=3)),
        _row(5, T0 + timedelta(seconds=4)),
    )
    result = _poll(path)
    assert (result.read, result.accepted, result.rejected) == (5, 2, 3)
    assert _poll(path).read == 0  # rejected rows are not read again

    with Project(path) as project:
        dead = _events(project, DEAD_LETTER_STREAM)
    reasons = [d["reason"] for d in dead]
    assert reasons[0] == "missing required field 'amount'"
    assert reasons[1] == "missing required field 'user_id'"
    assert "in the future" in reasons[2]
    assert all(d["stream"] == "orders" for d in dead)
    assert dead[0]["event"]["event_id"] == event_id(table, [2], T0 + timedelta(seconds=1))


def test_delay_leaves_rows_that_may_still_commit_behind_them(tmp_path: Path, table: str) -> None:
    path = _project(tmp_path, table, delay="1h")
    now = datetime.now(UTC)
    _upsert(table, _row(1, now - timedelta(hours=2)), _row(2, now - timedelta(minutes=1)))
    assert _poll(path).read == 1  # row 2 is newer than now() - 1h by the database's clock
    # once row 2 is an hour old, the next poll takes it
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET updated_at = %s WHERE id = 2").format(sql.Identifier(table)),
            (now - timedelta(minutes=90),),
        )
    assert _poll(path).read == 1


def test_serial_id_cursor_with_columns_named_like_fields(tmp_path: Path, table: str) -> None:
    """cursor and key the same serial column; no columns= mapping: same-named columns."""
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "ALTER TABLE {} RENAME customer TO user_id; ALTER TABLE {} RENAME created_at TO ts"
            ).format(sql.Identifier(table), sql.Identifier(table))
        )
    path = _project(tmp_path, table, cursor="id", batch=2, columns=None)
    insert = sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s)").format(sql.Identifier(table))
    with psycopg.connect(PG_URL, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(insert, [_row(i, T0) for i in (1, 2, 3)])
        assert _poll(path).accepted == 3
        cur.execute(insert, _row(4, T0))
    result = _poll(path)
    assert (result.read, result.accepted) == (1, 1)
    with Project(path) as project:
        assert [e["user_id"] for e in _events(project)] == ["u1", "u2", "u0", "u1"]


def test_a_changed_definition_asks_for_a_reset(tmp_path: Path, table: str) -> None:
    path = _project(tmp_path, table)
    _upsert(table, _row(1, T0), _row(2, T0))
    assert _poll(path).accepted == 2

    _project(tmp_path, table, cursor="created_at")  # same source name, another cursor
    result = _poll(path)
    assert result.error is not None and "headwater source reset orders_db" in result.error

    with Project(path) as project:
        project.source_runner().reset("orders_db")
    again = _poll(path)
    assert (again.read, again.accepted, again.duplicates) == (2, 2, 0)  # ids include the cursor


def test_errors_name_the_problem(tmp_path: Path, table: str) -> None:
    path = _project(tmp_path, table.replace("hw_src", "hw_nosuch"))
    assert "no table" in _poll(path).error

    path = _project(tmp_path, table, url="postgresql://postgres:pw@127.0.0.1:1/test")
    error = _poll(path).error
    assert "cannot connect" in error and "pw" not in error  # the password is redacted

    _project(tmp_path, table)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME updated_at TO updatd_at").format(sql.Identifier(table))
        )
    error = _poll(path).error
    assert "no column 'updated_at'; did you mean 'updatd_at'?" in error


def test_cli_runs_sources_once_and_reports(tmp_path: Path, table: str) -> None:
    path = _project(tmp_path, table)
    _upsert(table, _row(1, T0), (2, "u2", None, "paid", T0, T0))
    cli = CliRunner()
    result = cli.invoke(app, ["source", "run", "orders_db", "-p", str(path)])
    assert result.exit_code == 0, result.output
    assert "orders_db: 2 read, 1 accepted, 0 duplicates, 1 rejected" in result.output
    status = cli.invoke(app, ["source", "status", "-p", str(path)])
    assert status.exit_code == 0 and "orders_db" in status.output

    _project(tmp_path, table, url="postgresql://postgres@127.0.0.1:1/test")
    failed = cli.invoke(app, ["source", "run", "-p", str(path)])
    assert failed.exit_code == 1


def test_an_integer_id_keys_a_string_field(tmp_path: Path, table: str) -> None:
    """The table's bigint id feeds the stream's string key as its digits, not a rejection."""
    columns = {"id": "user_id", "amount": "amount", "status": "status", "created_at": "ts"}
    path = _project(tmp_path, table, columns=columns)
    _upsert(table, *(_row(i, T0 + timedelta(seconds=i)) for i in (1, 22)))
    result = _poll(path)
    assert (result.accepted, result.rejected) == (2, 0)
    with Project(path) as project:
        assert [e["user_id"] for e in _events(project)] == ["1", "22"]
