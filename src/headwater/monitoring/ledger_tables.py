"""The writes the monitor ledger's consumer makes to its tables (``stores/monitor/schema.py``
describes them), inside the transaction that also moves the checkpoints (see
``monitoring/ledger.py``). The SQL is the monitor state port's portable subset.
"""

from __future__ import annotations

import pyarrow as pa

from headwater.monitoring import rollup
from headwater.stores.monitor.base import MonitorSession

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


def insert_predictions(con: MonitorSession, rows: pa.Table) -> None:
    """Add new predictions (a prediction id already held is a duplicate in the log, left
    out); those whose feedback came first are labelled at once."""
    con.load("_new", rows)
    columns = ", ".join(OUTCOME_COLUMNS)
    # No index on prediction id in DuckDB (it would be twice the size of the rows): a
    # duplicate has the same time, so only the rows of the batch's days are looked at.
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


def merge_feedback(con: MonitorSession, events: pa.Table) -> None:
    """Fold feedback events into each prediction's outcome: the latest by event time (then
    log position) wins, and the earliest gives when the ground truth was first known; the
    predictions they name take the new outcome, and their days are refreshed."""
    con.load("_events", events)
    con.execute("DROP TABLE IF EXISTS _merged")
    con.execute(
        """CREATE TEMP TABLE _merged AS
        SELECT source, prediction_id, outcome, event_us, part, pos, first_us FROM (
            SELECT source, prediction_id, outcome, event_us, part, pos,
                   min(first_us) OVER (PARTITION BY source, prediction_id) AS first_us,
                   row_number() OVER (PARTITION BY source, prediction_id
                                      ORDER BY event_us DESC, part DESC, pos DESC) AS latest
            FROM (SELECT f.* FROM feedback f WHERE EXISTS (SELECT 1 FROM _events e
                    WHERE f.source = e.source AND f.prediction_id = e.prediction_id)
                  UNION ALL SELECT * FROM _events) AS everything
        ) AS ranked WHERE latest = 1"""
    )
    con.execute(
        "INSERT INTO feedback SELECT * FROM _merged ON CONFLICT (source, prediction_id) "
        "DO UPDATE SET outcome = excluded.outcome, event_us = excluded.event_us, "
        "part = excluded.part, pos = excluded.pos, first_us = excluded.first_us"
    )
    con.execute(
        "UPDATE outcomes SET label = m.outcome, known_us = m.first_us FROM _merged m "
        "WHERE m.source = outcomes.source AND m.prediction_id = outcomes.prediction_id"
    )
    rollup.touch(
        con,
        "SELECT DISTINCT o.service, o.variant, o.model, o.version, o.day FROM outcomes o "
        "WHERE EXISTS (SELECT 1 FROM _merged m "
        "WHERE m.source = o.source AND m.prediction_id = o.prediction_id)",
    )


def settle(con: MonitorSession, settled: pa.Table) -> None:
    """Record matured model labels (NaN: the label has no value; settled all the same)."""
    con.load("_settled", settled)
    days = _days(settled)
    con.execute(
        "UPDATE outcomes SET label = s.label, known_us = s.known_us, pending = false, "
        "entity = NULL FROM _settled s WHERE outcomes.day BETWEEN ? AND ? "
        "AND s.prediction_id = outcomes.prediction_id",
        days,
    )
    rollup.touch(
        con,
        "SELECT DISTINCT o.service, o.variant, o.model, o.version, o.day FROM outcomes o "
        "WHERE EXISTS (SELECT 1 FROM _settled s WHERE s.prediction_id = o.prediction_id) "
        f"AND o.day BETWEEN {days[0]:d} AND {days[1]:d}",
    )


def extend_index(con: MonitorSession, spans: list[tuple[int, int, int, int]]) -> None:
    con.executemany(
        "INSERT INTO log_index VALUES (?, ?, ?, ?) ON CONFLICT (part, day) DO UPDATE SET "
        "first_offset = least(log_index.first_offset, excluded.first_offset), "
        "last_offset = greatest(log_index.last_offset, excluded.last_offset)",
        spans,
    )


def checkpoint(con: MonitorSession, name: str) -> int:
    rows = con.rows("SELECT next_offset FROM checkpoints WHERE name = ?", [name])
    return int(rows[0][0]) if rows else 0


def set_checkpoint(con: MonitorSession, name: str, offset: int) -> None:
    con.execute(
        "INSERT INTO checkpoints VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET next_offset = excluded.next_offset",
        [name, offset],
    )
