"""Reading PostgreSQL tables for sources: keyset pagination over (cursor, key) for table
sources, and change data capture by trigger for change sources."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from headwater.definitions.source import redact_url
from headwater.sources.base import Change, SourceError, TableQuery

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

INSTALL_HINT = "PostgreSQL table sources need the postgres extra: pip install 'headwater[postgres]'"

# Change data capture: one table of recorded changes for every captured table, filled by a
# row trigger in the writing transaction (so a change is recorded if and only if it commits).
# A change's position is (the writing transaction's id, its order in the capture): reading
# only transactions older than the oldest one still running, in that order, no change can
# later appear behind a position already read.
CAPTURE = """
CREATE SCHEMA IF NOT EXISTS headwater_capture;
CREATE TABLE IF NOT EXISTS headwater_capture.changes (
    source_table text NOT NULL,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    seq bigint GENERATED ALWAYS AS IDENTITY,
    operation text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    row jsonb NOT NULL,
    PRIMARY KEY (source_table, xid, seq)
);
CREATE OR REPLACE FUNCTION headwater_capture.record() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO headwater_capture.changes (source_table, operation, row)
        VALUES (TG_ARGV[0], 'delete', to_jsonb(OLD));
    ELSE
        INSERT INTO headwater_capture.changes (source_table, operation, row)
        VALUES (TG_ARGV[0], lower(TG_OP), to_jsonb(NEW));
    END IF;
    RETURN NULL;
END $$;
"""


class PostgresTableReader:
    """A ``TableReader`` and ``ChangeReader`` on one PostgreSQL database (a libpq URL); every
    read is its own autocommit statement, so no transaction stays open between polls.

    With an index on the ordering columns (``CREATE INDEX ON orders (updated_at, id)``) each
    read is an index range scan, however far into the table the position is.
    """

    def __init__(self, url: str) -> None:
        try:
            import psycopg  # noqa: F401
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(INSTALL_HINT, name=e.name) from e
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        import psycopg

        # a connection the server dropped (restart, failover) is replaced on next use
        if self._conn is None or self._conn.broken or self._conn.closed:
            try:
                self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10)
            except psycopg.OperationalError as exc:
                raise SourceError(
                    f"cannot connect to {redact_url(self._url)}: {str(exc).strip()}"
                ) from None
        return self._conn

    def columns(self, table: str) -> list[str]:
        import psycopg
        from psycopg import sql

        query = sql.SQL("SELECT * FROM {} LIMIT 0").format(_table(table))
        try:
            cur = self._connection().execute(query)
        except psycopg.errors.UndefinedTable:
            raise SourceError(
                f"no table {table!r} in {redact_url(self._url)}; check the source's table="
            ) from None
        return [c.name for c in cur.description or ()]

    def read(
        self, query: TableQuery, after: Sequence[Any] | None, limit: int
    ) -> list[tuple[Any, ...]]:
        import psycopg
        from psycopg import sql

        order = sql.SQL(", ").join(map(sql.Identifier, query.order_by))
        where: list[sql.Composable] = [
            sql.SQL("{} IS NOT NULL").format(sql.Identifier(query.order_by[0]))
        ]
        params: list[Any] = []
        if after is not None:
            # a row comparison: lexicographic, and an index range scan on (cursor, key)
            marks = sql.SQL(", ").join(sql.Placeholder() * len(after))
            where.append(sql.SQL("({}) > ({})").format(order, marks))
            params += after
        if query.delay_us is not None:
            where.append(
                sql.SQL("{} <= now() - make_interval(secs => %s)").format(
                    sql.Identifier(query.order_by[0])
                )
            )
            params.append(query.delay_us / 1e6)
        statement = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT %s").format(
            sql.SQL(", ").join(map(sql.Identifier, query.columns)),
            _table(query.table),
            sql.SQL(" AND ").join(where),
            order,
        )
        try:
            return self._connection().execute(statement, [*params, limit]).fetchall()
        except psycopg.Error as exc:
            hint = (
                "; delay= needs a timestamp cursor"
                if query.delay_us is not None and isinstance(exc, psycopg.errors.UndefinedFunction)
                else ""
            )
            raise SourceError(f"reading {query.table!r} failed: {str(exc).strip()}{hint}") from None

    # -- change data capture ----------------------------------------------------------------

    def install(self, table: str) -> None:
        """Create the capture table and function if missing, and the table's trigger."""
        import psycopg
        from psycopg import sql

        self.columns(table)  # a clear error for a missing table
        conn = self._connection()
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('headwater_capture'))")
                conn.execute(CAPTURE)
                conn.execute(
                    sql.SQL(
                        "CREATE OR REPLACE TRIGGER headwater_capture AFTER INSERT OR UPDATE "
                        "OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION "
                        "headwater_capture.record({})"
                    ).format(_table(table), sql.Literal(table))
                )
        except psycopg.Error as exc:
            raise SourceError(
                f"cannot install change capture on {table!r}: {str(exc).strip()} (the source "
                "needs the right to create a schema, a function and a trigger)"
            ) from None

    def snapshot(self, table: str, batch: int) -> Generator[str | list[dict[str, Any]]]:
        import psycopg
        from psycopg import sql

        try:
            with psycopg.connect(self._url, connect_timeout=10) as conn:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                with conn.transaction():
                    (token,) = conn.execute("SELECT pg_current_snapshot()::text").fetchone() or ()
                    yield token
                    with conn.cursor(name="headwater_snapshot") as cur:
                        cur.execute(sql.SQL("SELECT to_jsonb(t) FROM {} t").format(_table(table)))
                        while rows := cur.fetchmany(batch):
                            yield [r[0] for r in rows]
        except psycopg.Error as exc:
            raise SourceError(
                f"reading a snapshot of {table!r} failed: {str(exc).strip()}"
            ) from None

    def changes(
        self, table: str, after: tuple[str, int] | None, limit: int, since: str | None
    ) -> list[Change]:
        import psycopg

        where = ["source_table = %s", "xid < pg_snapshot_xmin(pg_current_snapshot())"]
        params: list[Any] = [table]
        if after is not None:
            where.append("(xid, seq) > (%s::xid8, %s)")
            params += after
        if since is not None:
            where.append("NOT pg_visible_in_snapshot(xid, %s::pg_snapshot)")
            params.append(since)
        statement = (
            "SELECT xid::text, seq, operation, changed_at, row FROM headwater_capture.changes "
            f"WHERE {' AND '.join(where)} ORDER BY xid, seq LIMIT %s"
        )
        try:
            rows = self._connection().execute(statement, [*params, limit]).fetchall()
        except psycopg.Error as exc:
            raise SourceError(
                f"reading the changes of {table!r} failed: {str(exc).strip()}"
            ) from None
        return [Change(*row) for row in rows]

    def prune(self, table: str, upto: tuple[str, int], older_than_s: float) -> int:
        import psycopg

        try:
            cur = self._connection().execute(
                "DELETE FROM headwater_capture.changes WHERE source_table = %s "
                "AND (xid, seq) <= (%s::xid8, %s) "
                "AND changed_at < now() - make_interval(secs => %s)",
                [table, *upto, older_than_s],
            )
        except psycopg.Error as exc:
            raise SourceError(
                f"pruning the changes of {table!r} failed: {str(exc).strip()}"
            ) from None
        return cur.rowcount

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _table(name: str) -> sql.Identifier:
    from psycopg import sql

    return sql.Identifier(*name.split("."))
