"""The embedded monitor state: the ledger's tables in one DuckDB file of the project."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from headwater.stores.monitor.base import MonitorStateError
from headwater.stores.monitor.schema import MIGRATIONS, TABLES

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class DuckDBMonitorSession:
    """The ledger file open by one holder (see ``MonitorSession``)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._con.execute(sql, list(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._con.executemany(sql, [list(r) for r in rows])

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._con.execute(sql, list(params)).fetchall()

    def arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        return self._con.sql(sql, params=list(params) or None).to_arrow_table()

    def load(self, name: str, table: pa.Table) -> None:
        self._con.register(name, table)  # read in place, replacing what had the name

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def reset(self) -> None:
        with self.transaction():
            for table in (*TABLES, "schema_migrations"):
                self._con.execute(f"DROP TABLE IF EXISTS {table}")
        migrate(self._con)


class DuckDBMonitorStore:
    """The ledger in the DuckDB file ``path`` (``.headwater/monitor.duckdb`` by default).

    One holder at a time: a thread of this process waits for the others, and DuckDB locks
    the file against other processes, which ``session`` waits out too.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.location = str(self.path)

    @contextmanager
    def session(self, wait: float = 120.0) -> Iterator[DuckDBMonitorSession]:
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(str(self.path.resolve()), threading.Lock())
        if not lock.acquire(timeout=wait):
            raise MonitorStateError(f"the monitor ledger {self.path} is busy in this process")
        try:
            con = _open(self.path, wait)
            try:
                migrate(con)
                yield DuckDBMonitorSession(con)
            finally:
                con.close()
        finally:
            lock.release()


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Apply the missing migrations in order (a ledger written before there were any holds
    the tables of the first, which creates only what is missing)."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
    applied = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
    if max(applied, default=0) > len(MIGRATIONS):
        raise MonitorStateError(
            f"the monitor ledger is at schema version {max(applied)}, newer than this "
            f"headwater knows ({len(MIGRATIONS)}): upgrade headwater, or delete the file "
            "(it is rebuilt from the log)"
        )
    for version, steps in enumerate(MIGRATIONS, start=1):
        if version in applied:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for step in steps:
                con.execute(step)
            con.execute("INSERT INTO schema_migrations VALUES (?)", [version])
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")


def _open(path: Path, wait: float) -> duckdb.DuckDBPyConnection:
    """Open the ledger file, waiting while another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline, pause = time.monotonic() + wait, 0.02
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise MonitorStateError(
                    f"cannot open the monitor ledger {path}: {exc}; is another `headwater "
                    "monitor` running? It is derived state: deleting the file rebuilds it"
                ) from None
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
