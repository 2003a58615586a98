"""The monitor ledger's tables, and the writes its consumer makes to them inside the
transaction that also moves the checkpoints (see ``monitoring/ledger.py``).

``outcomes``: one row per reported (non-shadow) prediction: where it is in the log, its score,
the label's entity keys while a model label is pending, and the label once known (``known_us``:
when). ``feedback``: per feedback source and prediction id, the outcome that wins so far (the
latest by event time, then log position) and the first event's time. ``log_index``: the offsets
each day's predictions span per partition, so a window's predictions are read without a scan.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pyarrow as pa

from headwater.monitoring import rollup

TABLES = ("meta", "checkpoints", "log_index", "outcomes", "feedback")
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (name VARCHAR PRIMARY KEY, next_offset BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS log_index (
    part INTEGER, day INTEGER, first_offset BIGINT NOT NULL, last_offset BIGINT NOT NULL,
    PRIMARY KEY (part, day));
CREATE TABLE IF NOT EXISTS outcomes (
    prediction_id VARCHAR NOT NULL,
    service VARCHAR NOT NULL, variant VARCHAR NOT NULL, model VARCHAR NOT NULL,
    version INTEGER NOT NULL, day INTEGER NOT NULL, ts_us BIGINT NOT NULL,
    part INTEGER NOT NULL, pos BIGINT NOT NULL, score DOUBLE,
    source VARCHAR, entity VARCHAR, pending BOOLEAN NOT NULL,
    label DOUBLE, known_us BIGINT);
CREATE TABLE IF NOT EXISTS feedback (
    source VARCHAR, prediction_id VARCHAR, outcome DOUBLE NOT NULL, event_us BIGINT NOT NULL,
    part INTEGER NOT NULL, pos BIGINT NOT NULL, first_us BIGINT NOT NULL,
    PRIMARY KEY (source, prediction_id));
"""


OUTCOME_SCHEMA = pa.schema(
    [
        ("prediction_id", pa.string()),
        ("service", pa.string()),
        ("variant", pa.string()),
        ("model", pa.string()),
        ("version", pa.int32()),
        ("day", pa.int32()),
        ("ts_us", pa.int64()),
        ("part", pa.int32()),
        ("pos", pa.int64()),
        ("score", pa.float64()),
        ("source", pa.string()),
        ("entity", pa.string()),
        ("pending", pa.bool_()),
    ]
)
OUTCOME_COLUMNS = tuple(OUTCOME_SCHEMA.names)


def insert_predictions(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> None:
    """Add new predictions (a prediction id already held is a duplicate in the log, left
    out); those whose feedback came first are labelled at once."""
    con.register("_new", rows)
    try:
        columns = ", ".join(OUTCOME_COLUMNS)
        # No index on prediction id (it would be twice the size of the rows): a duplicate has
        # the same time, so only the rows of the batch's days are looked at.
        days = _days(rows)
        con.execute(
            f"""INSERT INTO outcomes ({columns}) SELECT {columns} FROM _new n WHERE NOT EXISTS (
                SELECT 1 FROM outcomes o WHERE o.day BETWEEN ? AND ?
                AND o.prediction_id = n.prediction_id)""",
            days,
        )
        con.execute(
            "UPDATE outcomes SET label = f.outcome, known_us = f.first_us FROM feedback f, _new n "
            "WHERE outcomes.day BETWEEN ? AND ? AND outcomes.prediction_id = n.prediction_id "
            "AND f.source = outcomes.source AND f.prediction_id = outcomes.prediction_id",
            days,
        )
        rollup.touch(con, "SELECT DISTINCT service, variant, model, version, day FROM _new")
    finally:
        con.unregister("_new")


def _days(rows: pa.Table) -> list[int]:
    days = rows["day"].to_numpy()
    return [int(days.min()), int(days.max())]


FEEDBACK_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("prediction_id", pa.string()),
        ("outcome", pa.float64()),
        ("event_us", pa.int64()),
        ("part", pa.int32()),
        ("pos", pa.int64()),
        ("first_us", pa.int64()),
    ]
)


def merge_feedback(con: duckdb.DuckDBPyConnection, events: pa.Table) -> None:
    """Fold feedback events into each prediction's outcome: the latest by event time (then
    log position) wins, and the earliest gives when the ground truth was first known; the
    predictions they name take the new outcome, and their days are refreshed."""
    con.register("_events", events)
    try:
        latest = "(event_us, part, pos)"
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _merged AS
            SELECT source, prediction_id, arg_max(outcome, {latest}) AS outcome,
                   arg_max(event_us, {latest}) AS event_us, arg_max(part, {latest}) AS part,
                   arg_max(pos, {latest}) AS pos, min(first_us) AS first_us
            FROM (SELECT f.* FROM feedback f SEMI JOIN _events e
                    ON f.source = e.source AND f.prediction_id = e.prediction_id
                  UNION ALL SELECT * FROM _events)
            GROUP BY source, prediction_id"""
        )
        con.execute("INSERT OR REPLACE INTO feedback SELECT * FROM _merged")
        con.execute(
            "UPDATE outcomes SET label = m.outcome, known_us = m.first_us FROM _merged m "
            "WHERE m.source = outcomes.source AND m.prediction_id = outcomes.prediction_id"
        )
        rollup.touch(
            con,
            "SELECT DISTINCT o.service, o.variant, o.model, o.version, o.day FROM outcomes o "
            "SEMI JOIN _merged m ON m.source = o.source AND m.prediction_id = o.prediction_id",
        )
    finally:
        con.unregister("_events")


def settle(con: duckdb.DuckDBPyConnection, settled: pa.Table) -> None:
    """Record matured model labels (NaN: the label has no value; settled all the same)."""
    con.register("_settled", settled)
    days = _days(settled)
    try:
        con.execute(
            "UPDATE outcomes SET label = s.label, known_us = s.known_us, pending = false, "
            "entity = NULL FROM _settled s WHERE outcomes.day BETWEEN ? AND ? "
            "AND s.prediction_id = outcomes.prediction_id",
            days,
        )
        rollup.touch(
            con,
            "SELECT DISTINCT o.service, o.variant, o.model, o.version, o.day FROM outcomes o "
            "SEMI JOIN _settled s ON s.prediction_id = o.prediction_id "
            f"WHERE o.day BETWEEN {days[0]:d} AND {days[1]:d}",
        )
    finally:
        con.unregister("_settled")


def extend_index(con: duckdb.DuckDBPyConnection, spans: list[tuple[int, int, int, int]]) -> None:
    if spans:
        con.executemany(
            "INSERT INTO log_index VALUES (?, ?, ?, ?) ON CONFLICT (part, day) DO UPDATE SET "
            "first_offset = least(log_index.first_offset, excluded.first_offset), "
            "last_offset = greatest(log_index.last_offset, excluded.last_offset)",
            [list(s) for s in spans],
        )


def checkpoint(con: duckdb.DuckDBPyConnection, name: str) -> int:
    rows = con.execute("SELECT next_offset FROM checkpoints WHERE name = ?", [name]).fetchall()
    return int(rows[0][0]) if rows else 0


def set_checkpoint(con: duckdb.DuckDBPyConnection, name: str, offset: int) -> None:
    con.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?)", [name, offset])


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
