"""The shared monitor state: the ledger's tables in a PostgreSQL schema, so every server and
``headwater monitor`` of a project, on any host, reads and advances one ledger."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from headwater.definitions.source import redact_url
from headwater.stores.metadata.postgres import _split_schema
from headwater.stores.monitor.base import MonitorStateError, column_types
from headwater.stores.monitor.schema import MIGRATIONS, POSTGRES_ONLY, TABLES

if TYPE_CHECKING:
    import psycopg

INSTALL_HINT = "the PostgreSQL monitor state needs psycopg: pip install 'headwater[postgres]'"


def _sql(text: str) -> str:
    """The ledger's ``?`` parameters as psycopg's."""
    return text.replace("%", "%%").replace("?", "%s")


class PostgresMonitorSession:
    """The ledger's tables on one connection, held under the schema's advisory lock."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str) -> None:
        self._conn, self._schema = conn, schema

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(_sql(sql), list(params))  # type: ignore[call-overload]

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._conn.cursor() as cur:
                cur.executemany(_sql(sql), [list(r) for r in rows])  # type: ignore[arg-type]

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(_sql(sql), list(params)).fetchall()  # type: ignore[call-overload,no-any-return]

    def arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        with self._conn.cursor() as cur:
            cur.execute(_sql(sql), list(params))  # type: ignore[arg-type]
            names = [d.name for d in cur.description or ()]
            rows = cur.fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        return pa.table({n: pa.array(list(c)) for n, c in zip(names, columns, strict=True)})

    def load(self, name: str, table: pa.Table) -> None:
        types = list(column_types(table))
        self._conn.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")  # type: ignore[call-overload]
        ddl = ", ".join(f"{c} {t}" for c, t in types)
        self._conn.execute(f"CREATE TEMP TABLE {name} ({ddl})")  # type: ignore[call-overload]
        names = ", ".join(c for c, _ in types)
        with self._conn.cursor() as cur, cur.copy(f"COPY {name} ({names}) FROM STDIN") as copy:  # type: ignore[arg-type]
            for row in zip(*(table[c].to_pylist() for c, _ in types), strict=True):
                copy.write_row(row)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._conn.transaction():
            yield

    def reset(self) -> None:
        with self._conn.transaction():
            for table in (*TABLES, "schema_migrations"):
                self._conn.execute(f"DROP TABLE IF EXISTS {table}")  # type: ignore[call-overload]
        _migrate(self._conn, self._schema)


class PostgresMonitorStore:
    """The ledger in the PostgreSQL schema the URL's ``schema`` parameter names
    (``headwater_monitor`` by default), e.g. ``[stores] monitor =
    "postgresql://app@db:5432/prod?schema=monitor_prod"``. One holder at a time across every
    process and host (an advisory lock on the schema); tables are created and upgraded by
    the migrations when a session opens. Unreachable, it fails here, naming the URL.
    """

    def __init__(self, url: str, schema: str = "headwater_monitor") -> None:
        try:
            import psycopg  # noqa: F401
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(INSTALL_HINT, name=e.name) from e
        self._url, url_schema = _split_schema(url)
        self.schema = url_schema or schema
        self.location = redact_url(url)
        self._lock = threading.Lock()
        self._conn = self._connect()
        self._key = int.from_bytes(
            hashlib.sha256(b"headwater.monitor:" + self.schema.encode()).digest()[:8],
            "big",
            signed=True,
        )

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg
        from psycopg import sql

        try:
            conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise MonitorStateError(
                f"cannot reach the monitor state at {self.location}: {exc}; check that "
                "PostgreSQL runs there and that [stores] monitor in headwater.toml names it"
            ) from None
        with conn.transaction():
            exists = "SELECT 1 FROM pg_namespace WHERE nspname = %s"
            if not conn.execute(exists, (self.schema,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        return conn

    @contextmanager
    def session(self, wait: float = 120.0) -> Iterator[PostgresMonitorSession]:
        if not self._lock.acquire(timeout=wait):
            raise MonitorStateError(f"the monitor state {self.location} is busy in this process")
        try:
            if self._conn.broken:  # a server restart or failover: connect again
                self._conn = self._connect()
            self._hold(wait)
            try:
                _migrate(self._conn, self.schema)
                yield PostgresMonitorSession(self._conn, self.schema)
            finally:
                if not self._conn.broken:
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
        finally:
            self._lock.release()

    def _hold(self, wait: float) -> None:
        """Take the schema's advisory lock, waiting up to ``wait`` seconds for its holder."""
        deadline, pause = time.monotonic() + wait, 0.02
        while True:
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
            if row and row[0]:
                return
            if time.monotonic() > deadline:
                raise MonitorStateError(
                    f"the monitor state {self.location} (schema {self.schema!r}) stayed busy "
                    f"for {wait:.0f} s: another `headwater monitor` or server is advancing it"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def close(self) -> None:
        self._conn.close()


def _migrate(conn: psycopg.Connection[Any], schema: str) -> None:
    """Apply the missing migrations in order, each in one transaction."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
    applied = {v for (v,) in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    if max(applied, default=0) > len(MIGRATIONS):
        raise MonitorStateError(
            f"the monitor state in schema {schema!r} is at version {max(applied)}, newer than "
            f"this headwater knows ({len(MIGRATIONS)}): upgrade headwater"
        )
    for version, steps in enumerate(MIGRATIONS, start=1):
        if version in applied:
            continue
        with conn.transaction():
            for step in (*steps, *POSTGRES_ONLY.get(version, ())):
                conn.execute(step)  # type: ignore[call-overload]
            conn.execute("INSERT INTO schema_migrations VALUES (%s)", (version,))
