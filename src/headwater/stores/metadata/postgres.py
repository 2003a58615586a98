"""The metadata store on PostgreSQL: the same contract as the embedded SQLite store, with its
tables created and upgraded by ordered migrations when a store connects."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from headwater.definitions.source import redact_url
from headwater.errors import HeadwaterError, StoreUnavailable
from headwater.stores.metadata.base import RegisteredDefinition
from headwater.stores.params import split_param

if TYPE_CHECKING:
    import psycopg

INSTALL_HINT = (
    "the PostgreSQL metadata store needs the postgres extra: pip install 'headwater[postgres]'"
)

# Ordered schema migrations: step ``i`` (counting from 1) is version ``i`` in
# ``schema_migrations``. Append new steps; never edit or reorder one that has shipped.
# ``{schema}`` is replaced by the quoted schema name.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE {schema}.definitions (
        kind text NOT NULL,
        name text NOT NULL,
        version text NOT NULL,
        spec jsonb NOT NULL,
        meta jsonb NOT NULL,
        applied_at bigint NOT NULL,
        PRIMARY KEY (kind, name)
    );
    CREATE TABLE {schema}.definition_history (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind text NOT NULL,
        name text NOT NULL,
        version text NOT NULL,
        spec jsonb NOT NULL,
        meta jsonb NOT NULL,
        applied_at bigint NOT NULL,
        action text NOT NULL CHECK (action IN ('apply', 'remove'))
    );
    CREATE INDEX definition_history_by_name ON {schema}.definition_history (kind, name, id);
    """,
    # step 2: JSON records by (collection, id); ``seq`` is assigned on first insert and kept
    # on update, so a collection reads back in the order its ids were first written
    """
    CREATE TABLE {schema}.records (
        seq bigint GENERATED ALWAYS AS IDENTITY,
        collection text NOT NULL,
        id text NOT NULL,
        doc jsonb NOT NULL,
        PRIMARY KEY (collection, id)
    );
    CREATE INDEX records_by_collection ON {schema}.records (collection, seq);
    """,
    # step 3: json keeps a document's text, so its keys read back in the order written (jsonb
    # reorders them: a model's features, a profile's columns came back in another order)
    """
    ALTER TABLE {schema}.definitions ALTER COLUMN spec TYPE json, ALTER COLUMN meta TYPE json;
    ALTER TABLE {schema}.definition_history
        ALTER COLUMN spec TYPE json, ALTER COLUMN meta TYPE json;
    ALTER TABLE {schema}.records ALTER COLUMN doc TYPE json;
    """,
    # step 4: ids by prefix (a model's versions and aliases) read an index range, whatever
    # the database's collation (text_pattern_ops compares bytes, as LIKE 'prefix%' needs)
    """
    CREATE INDEX records_by_prefix ON {schema}.records (collection, id text_pattern_ops);
    """,
)


# Statements on the store's tables; ``{schema}`` is replaced by the quoted schema name.
_SELECT_DEFINITIONS = (
    "SELECT kind, name, version, spec, meta, applied_at FROM {schema}.definitions "
    "ORDER BY kind, name"
)
_UPSERT = (
    "INSERT INTO {schema}.definitions VALUES (%s, %s, %s, %s::json, %s::json, %s) "
    "ON CONFLICT (kind, name) DO UPDATE SET version = EXCLUDED.version, spec = EXCLUDED.spec, "
    "meta = EXCLUDED.meta, applied_at = EXCLUDED.applied_at"
)
_RECORD_APPLY = (
    "INSERT INTO {schema}.definition_history (kind, name, version, spec, meta, applied_at, action) "
    "VALUES (%s, %s, %s, %s::json, %s::json, %s, 'apply')"
)
# DELETE ... RETURNING takes the row lock, so no concurrent apply slips in between
_REMOVE = (
    "WITH gone AS (DELETE FROM {schema}.definitions WHERE kind = %s AND name = %s "
    "RETURNING kind, name, version, spec, meta, applied_at) "
    "INSERT INTO {schema}.definition_history (kind, name, version, spec, meta, applied_at, action) "
    "SELECT kind, name, version, spec, meta, applied_at, 'remove' FROM gone"
)
_SELECT_HISTORY = (
    "SELECT kind, name, version, spec, meta, applied_at FROM {schema}.definition_history "
    "WHERE kind = %s AND name = %s AND action = 'apply' ORDER BY id"
)
_SELECT_RECORDS = "SELECT id, doc FROM {schema}.records WHERE collection = %s ORDER BY seq"
_SELECT_PREFIXED_RECORDS = (
    "SELECT id, doc FROM {schema}.records WHERE collection = %s AND id LIKE %s ORDER BY seq"
)
_SELECT_SOME_RECORDS = (
    "SELECT id, doc FROM {schema}.records WHERE collection = %s AND id = ANY(%s) ORDER BY seq"
)
_ADD_RECORD = (
    "INSERT INTO {schema}.records (collection, id, doc) VALUES (%s, %s, %s::json) "
    "ON CONFLICT (collection, id) DO NOTHING"
)
_DELETE_RECORDS = "DELETE FROM {schema}.records WHERE collection = %s AND id = ANY(%s)"
_UPSERT_RECORD = (
    "INSERT INTO {schema}.records (collection, id, doc) VALUES (%s, %s, %s::json) "
    "ON CONFLICT (collection, id) DO UPDATE SET doc = EXCLUDED.doc"
)


_F = TypeVar("_F", bound=Callable[..., Any])


def _reachable(method: _F) -> _F:
    """PostgreSQL being unreachable (down, restarting, the connection lost) as
    ``StoreUnavailable``; errors in what is asked stay as they are."""

    @functools.wraps(method)
    def call(self: PostgresMetadataStore, *args: Any, **kwargs: Any) -> Any:
        import psycopg

        try:
            return method(self, *args, **kwargs)
        except psycopg.OperationalError as exc:
            where = redact_url(self._url)
            raise StoreUnavailable(f"cannot reach PostgreSQL at {where}: {exc}") from exc

    return cast(_F, call)


class MetadataSchemaError(HeadwaterError):
    """The database's metadata schema is newer than this version of headwater knows."""


class PostgresMetadataStore:
    """Registered definitions in PostgreSQL tables inside one schema (``headwater`` by default).

    The URL is a libpq connection URI; a ``schema`` query parameter, when present, picks the
    schema and takes precedence over the ``schema`` argument, e.g. in ``headwater.toml``:
    ``metadata = "postgresql://app@db:5432/prod?schema=headwater_prod"``. Missing tables are
    created and older ones upgraded when the store connects, so no SQL is run by hand.
    """

    @_reachable
    def __init__(self, url: str, schema: str = "headwater") -> None:
        self._url = url
        try:
            from psycopg import sql
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(INSTALL_HINT, name=e.name) from e
        self._url, url_schema = _split_schema(url)
        self.schema = url_schema or schema
        ident = sql.Identifier(self.schema)
        (
            self._select_definitions,
            self._upsert,
            self._record_apply,
            self._remove,
            self._history,
            self._select_records,
            self._upsert_record,
            self._select_some_records,
            self._add_record,
            self._delete_records,
            self._select_prefixed_records,
        ) = (
            sql.SQL(text).format(schema=ident)
            for text in (
                _SELECT_DEFINITIONS,
                _UPSERT,
                _RECORD_APPLY,
                _REMOVE,
                _SELECT_HISTORY,
                _SELECT_RECORDS,
                _UPSERT_RECORD,
                _SELECT_SOME_RECORDS,
                _ADD_RECORD,
                _DELETE_RECORDS,
                _SELECT_PREFIXED_RECORDS,
            )
        )
        self._lock = threading.Lock()
        self._conn = self._connect()
        try:
            _migrate(self._conn, self.schema)
        except BaseException:
            self._conn.close()
            raise

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(self._url, autocommit=True, connect_timeout=10)

    def _connection(self) -> psycopg.Connection[Any]:
        # a connection the server dropped (restart, failover) is replaced on next use
        if self._conn.broken:
            self._conn = self._connect()
        return self._conn

    @_reachable
    def definitions(self) -> list[RegisteredDefinition]:
        with self._lock:
            rows = self._connection().execute(self._select_definitions).fetchall()
        return [RegisteredDefinition(*row) for row in rows]

    @_reachable
    def apply(
        self, upserts: Sequence[RegisteredDefinition], removals: Sequence[tuple[str, str]]
    ) -> None:
        # serialized as the SQLite store does, and before any SQL, so bad input changes nothing
        rows = [
            (
                d.kind,
                d.name,
                d.version,
                json.dumps(d.spec, default=str),
                json.dumps(d.meta),
                d.applied_at,
            )
            for d in upserts
        ]
        with self._lock:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                if rows:
                    # upsert first: its row lock orders the history of concurrent applies
                    cur.executemany(self._upsert, rows)
                    cur.executemany(self._record_apply, rows)
                if removals:
                    cur.executemany(self._remove, list(removals))

    @_reachable
    def history(self, kind: str, name: str) -> list[RegisteredDefinition]:
        with self._lock:
            rows = self._connection().execute(self._history, (kind, name)).fetchall()
        return [RegisteredDefinition(*row) for row in rows]

    @_reachable
    def get_records(
        self, collection: str, ids: Sequence[str] | None = None, prefix: str | None = None
    ) -> dict[str, dict[str, Any]]:
        with self._lock:
            if prefix:
                pattern = re.sub(r"([\\%_])", r"\\\1", prefix) + "%"  # LIKE's escapes
                rows = (
                    self._connection()
                    .execute(self._select_prefixed_records, (collection, pattern))
                    .fetchall()
                )
                if ids is not None:
                    chosen = set(ids)
                    rows = [r for r in rows if r[0] in chosen]
            elif ids is None:
                rows = self._connection().execute(self._select_records, (collection,)).fetchall()
            else:
                wanted = list(dict.fromkeys(ids))
                rows = (
                    self._connection()
                    .execute(self._select_some_records, (collection, wanted))
                    .fetchall()
                )
        # psycopg decodes json into Python objects
        return {record_id: doc for record_id, doc in rows}

    @_reachable
    def add_records(
        self, collection: str, records: Sequence[tuple[str, dict[str, Any]]]
    ) -> dict[str, dict[str, Any]]:
        rows = [(collection, record_id, json.dumps(doc)) for record_id, doc in records]
        if rows:
            with self._lock:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(self._add_record, rows)
        return self.get_records(collection, [record_id for record_id, _ in records])

    @_reachable
    def delete_records(self, collection: str, ids: Sequence[str]) -> int:
        with self._lock:
            cur = self._connection().execute(self._delete_records, (collection, list(ids)))
            return cur.rowcount

    @_reachable
    def put_records(self, records: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        # serialized as the SQLite store does, and before any SQL, so bad input changes nothing
        rows = [(collection, record_id, json.dumps(doc)) for collection, record_id, doc in records]
        if not rows:
            return
        with self._lock:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(self._upsert_record, rows)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _split_schema(url: str) -> tuple[str, str | None]:
    """The URL without its ``schema`` query parameter, and that parameter's value.

    >>> _split_schema("postgresql://u@h:5432/db?sslmode=require&schema=hw%5Fprod")
    ('postgresql://u@h:5432/db?sslmode=require', 'hw_prod')
    >>> _split_schema("postgresql://u@h/db")
    ('postgresql://u@h/db', None)
    """
    return split_param(url, "schema")


def _lock_key(schema: str) -> int:
    """A stable 64-bit advisory lock key for migrating one schema."""
    digest = hashlib.sha256(b"headwater.metadata.migrations:" + schema.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _migrate(conn: psycopg.Connection[Any], schema: str) -> None:
    """Apply the missing migrations in order, in one transaction, one process at a time."""
    from psycopg import sql

    ident = sql.Identifier(schema)
    table = sql.SQL("{}.schema_migrations").format(ident)
    with conn.transaction():
        # held until commit: a second process waits here, then finds nothing left to do
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
        # looked up before creating, so a role without CREATE can use a migrated schema
        if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone():
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
        exists = "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'schema_migrations'"
        if not conn.execute(exists, (schema,)).fetchone():
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (version int PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(table)
            )
        applied = {v for (v,) in conn.execute(sql.SQL("SELECT version FROM {}").format(table))}
        newest = max(applied, default=0)
        if newest > len(MIGRATIONS):
            raise MetadataSchemaError(
                f"metadata schema {schema!r} is at version {newest}, newer than this headwater "
                f"knows ({len(MIGRATIONS)}); upgrade headwater to use this database"
            )
        for version, step in enumerate(MIGRATIONS, start=1):
            if version not in applied:
                conn.execute(sql.SQL(step).format(schema=ident))
                insert = sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(table)
                conn.execute(insert, (version,))
