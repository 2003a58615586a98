"""Sources: where a stream's events come from besides being pushed — a database table read
incrementally by a cursor column or change by change, or files landing in a folder."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from headwater.definitions.base import Definition
from headwater.definitions.stream import Stream
from headwater.definitions.types import DType
from headwater.definitions.windows import parse_duration
from headwater.errors import DefinitionError

FORMATS = ("jsonl", "csv", "parquet")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def redact_url(url: str) -> str:
    """The URL without its password, for specs, logs and errors.

    >>> redact_url("postgresql://app:s3cret@db:5432/shop?sslmode=require")
    'postgresql://app:***@db:5432/shop?sslmode=require'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _duration_or_none(value: str | timedelta | int | None) -> int | None:
    if value is None or value == 0:
        return None
    return parse_duration(value)


def _check_table(
    name: str,
    stream: Stream,
    url: str,
    table: str,
    keys: tuple[str, ...],
    columns: Mapping[str, str] | None,
    batch_size: int,
    extra: Sequence[str] = (),
) -> None:
    """The checks a source on a database table needs: a database URL, a table name, a key,
    column names, and ``columns`` mapping onto fields of the stream, with every required
    field mapped (``extra``: fields the source fills itself)."""
    if not isinstance(url, str) or "://" not in url:
        raise DefinitionError(
            f"source {name!r}: url must be a database URL, e.g. postgresql://user@host/db"
        )
    parts = table.split(".") if isinstance(table, str) else []
    if not 1 <= len(parts) <= 2 or not all(_IDENTIFIER.match(p) for p in parts):
        raise DefinitionError(
            f"source {name!r}: table {table!r} is not a table name; write 'orders' or "
            "'schema.orders'"
        )
    if not keys:
        raise DefinitionError(f"source {name!r} needs key= (the table's primary key)")
    for column in (*keys, *(columns or {})):
        if not isinstance(column, str) or not _IDENTIFIER.match(column):
            raise DefinitionError(f"source {name!r}: {column!r} is not a column name")
    for target in (*(columns or {}).values(), *extra):
        if target != stream.id_field:
            stream.field(target)  # a clear error, with a suggestion, if it is missing
    targets = [*(columns or {}).values(), *extra]
    if len(set(targets)) != len(targets):
        raise DefinitionError(f"source {name!r}: two columns map to the same field")
    if columns is not None:
        unmapped = [f for f, s in stream.fields.items() if not s.nullable and f not in targets]
        if unmapped:
            raise DefinitionError(
                f"source {name!r}: stream {stream.name!r} requires field {unmapped[0]!r}, "
                "but no column maps to it; add it to columns="
            )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DefinitionError(f"source {name!r}: batch_size must be a positive integer")


class Source(Definition):
    """What every source has: a name, the stream it feeds, an owner and a description."""

    kind = "source"
    stream: Stream

    def _init_source(
        self,
        name: str,
        stream: Stream,
        owner: str | None,
        description: str | None,
        deprecated: bool,
        tags: Sequence[str],
    ) -> None:
        self._init_common(name, owner, description, deprecated, tuple(tags))
        if not isinstance(stream, Stream):
            raise DefinitionError(f"source {name!r}: stream= must be a Stream definition")
        self.stream = stream


class TableSource(Source):
    """A stream fed from a database table, read incrementally in ``cursor`` order.

    Each poll reads the rows after the last position, ``batch_size`` at a time, ordered by
    ``(cursor, *key)``: rows sharing a cursor value are ordered by their key, so a batch
    boundary inside a group of equal cursor values loses and repeats nothing. Each row
    becomes an event whose id is derived from the table, its key and its cursor value, so
    reading a row version twice appends it once; an update that moves the cursor (an
    ``updated_at`` column) is a new event. ``columns`` maps table columns to stream fields
    (by default, every column named like a field of the stream). ``delay`` leaves rows whose
    timestamp cursor is newer than the database's ``now() - delay`` to a later poll, so
    transactions still open when a poll runs cannot commit rows behind its position.
    ``url`` names the database (``postgresql://``); an index on ``(cursor, key)`` makes each
    read a range scan. Deleted rows are not seen: a delete is no row to read (a
    ``ChangeSource`` sees them).

    >>> orders = Stream("orders", fields={"user_id": "string", "amount": "float",
    ...     "ts": "timestamp"}, key="user_id", time="ts", owner="shop", description="Orders")
    >>> source = TableSource("orders_db", stream=orders,
    ...     url="postgresql://app:secret@db/shop", table="public.orders",
    ...     cursor="updated_at", key="id", columns={"customer": "user_id",
    ...     "total": "amount", "created_at": "ts"}, owner="shop", description="The orders table")
    >>> source.spec()["url"], source.order_by
    ('postgresql://app:***@db/shop', ('updated_at', 'id'))
    """

    def __init__(
        self,
        name: str,
        *,
        stream: Stream,
        url: str,
        table: str,
        cursor: str,
        key: str | Sequence[str],
        columns: Mapping[str, str] | None = None,
        batch_size: int = 1000,
        delay: str | timedelta | int | None = None,
        owner: str | None = None,
        description: str | None = None,
        deprecated: bool = False,
        tags: Sequence[str] = (),
    ) -> None:
        self._init_source(name, stream, owner, description, deprecated, tags)
        keys = (key,) if isinstance(key, str) else tuple(key)
        _check_table(name, stream, url, table, keys, columns, batch_size)
        if not isinstance(cursor, str) or not _IDENTIFIER.match(cursor):
            raise DefinitionError(f"source {name!r}: {cursor!r} is not a column name")
        self.url, self.table, self.cursor, self.keys = url, table, cursor, keys
        self.columns = None if columns is None else dict(columns)
        self.batch_size = batch_size
        self.delay_us = _duration_or_none(delay)

    @property
    def order_by(self) -> tuple[str, ...]:
        """The columns of a row's position: the cursor, then the key (the tie-breaker)."""
        return (self.cursor, *(k for k in self.keys if k != self.cursor))

    def spec(self) -> dict[str, Any]:
        # batch_size and delay change when rows are read, not which: not part of the version
        return {
            "kind": self.kind,
            "type": "table",
            "name": self.name,
            "stream": self.stream.name,
            "url": redact_url(self.url),
            "table": self.table,
            "cursor": self.cursor,
            "keys": list(self.keys),
            "columns": self.columns,
        }


class ChangeSource(Source):
    """A stream fed by every change of a PostgreSQL table: change data capture by trigger.

    The first poll installs, in the source database, a trigger on ``table`` that records each
    inserted, updated and deleted row (the new row; for a delete, the old one) in the table
    ``headwater_capture.changes``, then reads the table's existing rows as a consistent
    snapshot (``snapshot=False`` skips it); later polls read the recorded changes, exactly
    once each, in the order of their transactions' ids (not of their commits: the event
    time, e.g. ``changed_at``, carries when each happened). Unlike a ``TableSource`` it sees
    deletes, and every update even without an ``updated_at`` column. It needs no
    ``wal_level=logical``, only the right to create a schema, a function and a trigger.
    ``operation`` names a string field of the stream that receives ``"snapshot"``,
    ``"insert"``, ``"update"`` or ``"delete"``; ``changed_at`` a timestamp field that
    receives when the change happened (a good event time for a change stream). ``columns``
    maps table columns to stream fields as for a ``TableSource``. Recorded changes that the
    source has read are deleted once older than ``retention`` (0: at once). A change is read
    once every transaction older than its own has ended: a transaction left open anywhere on
    the server delays the capture (never reorders or loses it) until it ends. TRUNCATE is not
    captured.

    >>> changes = Stream("customer_changes", fields={"customer_id": "string",
    ...     "tier": "string", "op": "string", "ts": "timestamp"}, key="customer_id",
    ...     time="ts", owner="crm", description="Every change of a customer")
    >>> source = ChangeSource("customers_cdc", stream=changes,
    ...     url="postgresql://app@db/crm", table="public.customers", key="id",
    ...     columns={"id": "customer_id", "tier": "tier"}, operation="op", changed_at="ts",
    ...     owner="crm", description="The customers table, change by change")
    >>> source.spec()["type"], source.retention_us // 86_400_000_000
    ('changes', 7)
    """

    def __init__(
        self,
        name: str,
        *,
        stream: Stream,
        url: str,
        table: str,
        key: str | Sequence[str],
        columns: Mapping[str, str] | None = None,
        operation: str | None = None,
        changed_at: str | None = None,
        snapshot: bool = True,
        batch_size: int = 1000,
        retention: str | timedelta | int = "7d",
        owner: str | None = None,
        description: str | None = None,
        deprecated: bool = False,
        tags: Sequence[str] = (),
    ) -> None:
        self._init_source(name, stream, owner, description, deprecated, tags)
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            raise DefinitionError(
                f"source {name!r}: change data capture reads PostgreSQL; url must be "
                "postgresql://user@host/db"
            )
        keys = (key,) if isinstance(key, str) else tuple(key)
        extra = [f for f in (operation, changed_at) if f is not None]
        _check_table(name, stream, url, table, keys, columns, batch_size, extra)
        if operation is not None and stream.field(operation).dtype is not DType.STRING:
            raise DefinitionError(
                f"source {name!r}: operation field {operation!r} must be a string"
            )
        if changed_at is not None and stream.field(changed_at).dtype is not DType.TIMESTAMP:
            raise DefinitionError(
                f"source {name!r}: changed_at field {changed_at!r} must be a timestamp"
            )
        self.url, self.table, self.keys = url, table, keys
        self.columns = None if columns is None else dict(columns)
        self.operation, self.changed_at = operation, changed_at
        self.snapshot, self.batch_size = bool(snapshot), batch_size
        self.retention_us = 0 if retention == 0 else parse_duration(retention)

    def spec(self) -> dict[str, Any]:
        # batch_size and retention change when changes are read and kept, not which
        return {
            "kind": self.kind,
            "type": "changes",
            "name": self.name,
            "stream": self.stream.name,
            "url": redact_url(self.url),
            "table": self.table,
            "keys": list(self.keys),
            "columns": self.columns,
            "operation": self.operation,
            "changed_at": self.changed_at,
            "snapshot": self.snapshot,
        }


class FolderSource(Source):
    """A stream fed from event files (JSON lines, CSV, Parquet) landing in a folder.

    Each file matching ``pattern`` (relative to the project folder when ``path`` is
    relative) is ingested once. A file is taken only once it is complete: names starting
    with '.' or '_' and ending in '.tmp', '.part' or '.partial' are never read (write under
    such a name, then rename), and a file modified within the last ``settle`` is left for
    a later poll. A file whose name, size and modification time were seen is skipped; one
    whose size or time changed is read again only if its content changed. ``format``
    defaults to each file's suffix.

    >>> orders = Stream("orders", fields={"user_id": "string", "ts": "timestamp"},
    ...     key="user_id", time="ts", owner="shop", description="Orders")
    >>> FolderSource("orders_drop", stream=orders, path="landing/orders", pattern="*.jsonl",
    ...     owner="shop", description="Nightly order exports").settle_us
    5000000
    """

    def __init__(
        self,
        name: str,
        *,
        stream: Stream,
        path: str | Path,
        pattern: str = "*",
        format: str | None = None,
        settle: str | timedelta | int | None = "5s",
        owner: str | None = None,
        description: str | None = None,
        deprecated: bool = False,
        tags: Sequence[str] = (),
    ) -> None:
        self._init_source(name, stream, owner, description, deprecated, tags)
        if not str(path):
            raise DefinitionError(f"source {name!r} needs path= (a folder)")
        if not isinstance(pattern, str) or not pattern or pattern.startswith("/"):
            raise DefinitionError(
                f"source {name!r}: pattern must be a relative glob, e.g. '*.jsonl'"
            )
        if format is not None and format not in FORMATS:
            raise DefinitionError(f"source {name!r}: format must be one of {FORMATS}")
        self.path = Path(path)
        self.pattern = pattern
        self.format = format
        self.settle_us = _duration_or_none(settle)

    def spec(self) -> dict[str, Any]:
        # settle changes when a file is read, not what: not part of the version
        return {
            "kind": self.kind,
            "type": "folder",
            "name": self.name,
            "stream": self.stream.name,
            "path": str(self.path),
            "pattern": self.pattern,
            "format": self.format,
        }
