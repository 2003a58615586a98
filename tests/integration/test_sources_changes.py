"""Change sources against a real PostgreSQL: the snapshot, inserts, updates and deletes in
order, a transaction still open when a poll runs, restarts, re-snapshots and pruning.

PostgreSQL must be reachable at ``PG_URL``; a missing server fails these tests, never skips.
Each test creates its own uniquely named table and drops it (and its recorded changes).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from headwater import Project
from headwater.cli import app
from headwater.sources.base import TABLE_POSITIONS
from headwater.sources.postgres import PostgresTableReader
from tests.conftest import write_project

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"

DEFINITIONS = """
from headwater import ChangeSource, Entity, Feature, Stream, agg

changes = Stream(
    "customer_changes",
    fields={{"customer_id": "string", "tier": "string", "spend": "float", "op": "string",
            "ts": "timestamp"}},
    key="customer_id", time="ts", owner="crm", description="Every change of a customer",
)
customer = Entity("customer", keys=["customer_id"], owner="crm", description="A customer")
changes_seen = Feature("changes", entity=customer, stream=changes, aggregation=agg.count(),
                       windows=["lifetime"], owner="crm", description="Changes of the customer")
customers_cdc = ChangeSource(
    "customers_cdc", stream=changes, url={url!r}, table={table!r}, key="id",
    columns={columns!r}, operation="op",
    changed_at="ts", snapshot={snapshot!r}, batch_size={batch}, retention={retention!r},
    owner="crm", description="The customers table, change by change",
)
"""


@pytest.fixture
def table() -> Iterator[str]:
    name = f"hw_cdc_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, code text NOT NULL, tier text, "
                "spend numeric(10, 2))"
            ).format(sql.Identifier(name))
        )
    yield name
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        if conn.execute("SELECT to_regclass('headwater_capture.changes')").fetchone()[0]:
            conn.execute("DELETE FROM headwater_capture.changes WHERE source_table = %s", [name])


COLUMNS = {"code": "customer_id", "tier": "tier", "spend": "spend"}


def _project(
    tmp_path: Path,
    table: str,
    *,
    batch: int = 1000,
    snapshot: bool = True,
    retention: Any = "7d",
    columns: dict[str, str] = COLUMNS,
) -> Path:
    text = DEFINITIONS.format(
        url=PG_URL,
        table=table,
        batch=batch,
        snapshot=snapshot,
        retention=retention,
        columns=columns,
    )
    folder = tmp_path / "project"
    shutil.rmtree(folder / "__pycache__", ignore_errors=True)
    return write_project(folder, text)


def _sql(statement: str, table: str, *params: Any) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(t=sql.Identifier(table)), params)


def _poll(path: Path) -> Any:
    """One poll by a fresh process: a new Project and runner, as after a restart."""
    with Project(path) as project:
        runner = project.source_runner()
        try:
            (result,) = runner.poll()
        finally:
            runner.close()
        assert result.error is None, result.error
        return result


def _events(path: Path) -> list[dict[str, Any]]:
    with Project(path) as project:
        return [orjson.loads(r.payload) for r in project.log.read("customer_changes", 0, 10_000)]


def _recorded(table: str) -> int:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM headwater_capture.changes WHERE source_table = %s", [table]
        ).fetchone()
    return count


def test_snapshot_then_inserts_updates_and_deletes_in_order(tmp_path: Path, table: str) -> None:
    path = _project(tmp_path, table, batch=2)
    for i in range(1, 4):  # rows that exist before the source: they come in the snapshot
        _sql("INSERT INTO {t} VALUES (%s, %s, 'bronze', %s)", table, i, f"c{i}", 10 * i)
    first = _poll(path)
    assert (first.read, first.accepted, first.duplicates, first.rejected) == (3, 3, 0, 0)
    assert _poll(path).read == 0  # caught up

    _sql("INSERT INTO {t} VALUES (4, 'c4', NULL, 5.5)", table)
    _sql("UPDATE {t} SET tier = 'gold', spend = spend + 1 WHERE id IN (1, 4)", table)
    _sql("DELETE FROM {t} WHERE id = 2", table)
    _sql("UPDATE {t} SET tier = 'silver' WHERE id = 99", table)  # no row: no change
    second = _poll(path)
    assert (second.read, second.accepted) == (4, 4)

    events = _events(path)
    assert [(e["customer_id"], e["op"], e["tier"], e["spend"]) for e in events] == [
        ("c1", "snapshot", "bronze", 10.0),
        ("c2", "snapshot", "bronze", 20.0),
        ("c3", "snapshot", "bronze", 30.0),
        ("c4", "insert", None, 5.5),
        ("c1", "update", "gold", 11.0),
        ("c4", "update", "gold", 6.5),
        ("c2", "delete", "bronze", 20.0),  # a delete carries the row as it was
    ]
    times = [e["ts"] for e in events[3:]]
    assert times == sorted(times) and times[0] > 0  # the change times, in the order made
    # the events feed features like any other: c1 changed twice (snapshot, update)
    with Project(path) as project:
        project.process()
        row = project.online_features({"customer_id": "c1"}, ["changes_lifetime"])
    assert row["changes_lifetime"] == 2


def test_a_transaction_open_during_a_poll_is_read_once_it_commits(
    tmp_path: Path, table: str
) -> None:
    """Positions are (transaction, change): a poll reads only transactions older than every
    one still running, so an open one holds later ones back instead of being passed over."""
    path = _project(tmp_path, table, snapshot=False)
    assert _poll(path).read == 0  # installs the capture; no snapshot
    with psycopg.connect(PG_URL) as slow:
        slow.execute(sql.SQL("INSERT INTO {} VALUES (1, 'c1', 'slow', 1)").format(
            sql.Identifier(table)
        ))  # fmt: skip
        _sql("INSERT INTO {t} VALUES (2, 'c2', 'fast', 2)", table)  # commits after it began
        assert _poll(path).read == 0  # the fast one waits behind the open one
        slow.commit()
    assert _poll(path).read == 2
    assert sorted(e["tier"] for e in _events(path)) == ["fast", "slow"]
    assert _poll(path).read == 0


def test_restarts_re_reads_and_resnapshots_append_nothing_twice(tmp_path: Path, table: str) -> None:
    path = _project(tmp_path, table, batch=3, retention=0)
    for i in range(1, 6):
        _sql("INSERT INTO {t} VALUES (%s, %s, 'bronze', 1)", table, i, f"c{i}")
    assert _poll(path).accepted == 5
    _sql("UPDATE {t} SET spend = spend * 2", table)
    with Project(path) as project:  # a crash after ingesting, before the checkpoint
        before = project.metadata.get_records(TABLE_POSITIONS)["customers_cdc"]
    assert _poll(path).accepted == 5
    assert _recorded(table) == 0  # read, and older than the retention: pruned
    with Project(path) as project:
        project.metadata.put_records([(TABLE_POSITIONS, "customers_cdc", before)])
    # pruned changes are gone from the database, so the restored position finds none; the
    # log already holds them once
    assert _poll(path).read == 0
    _sql("UPDATE {t} SET tier = 'gold' WHERE id = 1", table)
    with Project(path) as project:
        before = project.metadata.get_records(TABLE_POSITIONS)["customers_cdc"]
    assert _poll(path).accepted == 1
    # a reset reads a new snapshot: rows unchanged since the first one are duplicates
    result = CliRunner().invoke(app, ["source", "reset", "customers_cdc", "--project", str(path)])
    assert result.exit_code == 0, result.output
    again = _poll(path)
    assert (again.read, again.accepted, again.duplicates) == (5, 5, 0)  # all changed since
    resnapshot = _poll(path)
    assert resnapshot.read == 0
    events = _events(path)
    assert len(events) == 5 + 5 + 1 + 5
    assert len({e["event_id"] for e in events}) == len(events)


def test_a_crash_between_ingest_and_checkpoint_re_reads_the_same_ids(
    tmp_path: Path, table: str
) -> None:
    path = _project(tmp_path, table, snapshot=False)
    assert _poll(path).read == 0
    for i in range(1, 4):
        _sql("INSERT INTO {t} VALUES (%s, %s, 'bronze', 1)", table, i, f"c{i}")
    with Project(path) as project:
        before = project.metadata.get_records(TABLE_POSITIONS)["customers_cdc"]
    assert _poll(path).accepted == 3
    with Project(path) as project:
        project.metadata.put_records([(TABLE_POSITIONS, "customers_cdc", before)])
    again = _poll(path)
    assert (again.read, again.accepted, again.duplicates) == (3, 0, 3)
    assert len(_events(path)) == 3


def test_status_and_clear_errors(tmp_path: Path, table: str) -> None:
    path = _project(tmp_path, table)
    result = CliRunner().invoke(app, ["source", "status", "--project", str(path)])
    assert result.exit_code == 0, result.output
    assert "changes of table" in result.output and "start" in result.output
    _poll(path)
    result = CliRunner().invoke(app, ["source", "status", "--project", str(path)])
    assert "after the snapshot" in result.output
    _sql("ALTER TABLE {t} RENAME COLUMN tier TO level", table)
    with Project(path) as project:
        runner = project.source_runner()
        (failed,) = runner.poll()
        runner.close()
    assert failed.error is not None and "no column 'tier'" in failed.error


def test_changes_the_snapshot_already_holds_are_left_out(table: str) -> None:
    """A change committed between installing the capture and taking the snapshot is in the
    snapshot's rows, so the change reads after it leave it out; a later one they return."""
    reader = PostgresTableReader(PG_URL)
    try:
        reader.install(table)
        _sql("INSERT INTO {t} VALUES (1, 'c1', 'bronze', 1)", table)
        rows = reader.snapshot(table, 10)
        token = next(rows)
        assert isinstance(token, str)
        with psycopg.connect(PG_URL, autocommit=True) as conn:  # while the snapshot is open
            conn.execute(sql.SQL("INSERT INTO {} VALUES (2, 'c2', 'gold', 2)").format(
                sql.Identifier(table)
            ))  # fmt: skip
        assert [r["code"] for batch in rows for r in batch] == ["c1"]
        assert [c.row["code"] for c in reader.changes(table, None, 10, None)] == ["c1", "c2"]
        after = reader.changes(table, None, 10, token)
        assert [(c.operation, c.row["code"]) for c in after] == [("insert", "c2")]
        assert reader.changes(table, (after[0].xid, after[0].seq), 10, token) == []
        reader.install(table)  # again: changes nothing
        assert len(reader.changes(table, None, 10, None)) == 2
    finally:
        reader.close()


def test_an_integer_id_keys_a_string_field(tmp_path: Path, table: str) -> None:
    """A table's bigint primary key feeds the stream's string key as its digits."""
    path = _project(tmp_path, table, columns={"id": "customer_id", "tier": "tier"})
    _sql("INSERT INTO {t} VALUES (7, 'c7', 'bronze', 1)", table)
    assert _poll(path).accepted == 1
    _sql("UPDATE {t} SET tier = 'gold' WHERE id = 7", table)
    result = _poll(path)
    assert (result.accepted, result.rejected) == (1, 0)
    assert [(e["customer_id"], e["op"], e["tier"]) for e in _events(path)] == [
        ("7", "snapshot", "bronze"),
        ("7", "update", "gold"),
    ]
