"""Reading PostgreSQL tables for table sources: keyset pagination over (cursor, key)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from headwater.definitions.source import redact_url
from headwater.sources.base import SourceError, TableQuery

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

INSTALL_HINT = "PostgreSQL table sources need the postgres extra: pip install 'headwater[postgres]'"


class PostgresTableReader:
    """A ``TableReader`` on one PostgreSQL database (a libpq URL); every read is its own
    autocommit statement, so no transaction stays open between polls.

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

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _table(name: str) -> sql.Identifier:
    from psycopg import sql

    return sql.Identifier(*name.split("."))
