"""Polling a table source: keyset reads after a checkpointed (cursor, key) position."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson

from headwater.definitions.source import ChangeSource, TableSource, redact_url
from headwater.definitions.stream import Stream
from headwater.definitions.types import DType
from headwater.errors import did_you_mean
from headwater.ingestion.service import IngestResult
from headwater.sources.base import TABLE_POSITIONS, PollResult, SourceError, TableQuery, TableReader
from headwater.stores.metadata.base import MetadataStore
from headwater.stores.urls import BackendError, Factory, open_url

Ingest = Callable[[str, list[Any]], IngestResult]


def _postgres_table(url: str, root: Path) -> TableReader:
    from headwater.sources.postgres import PostgresTableReader

    return PostgresTableReader(url)


READERS: dict[str, Factory[TableReader]] = {
    "postgresql": _postgres_table,
    "postgres": _postgres_table,
}


def open_reader(url: str, root: Path) -> TableReader:
    """The reader of a source's database, chosen by its URL's scheme in ``READERS``."""
    try:
        return open_url("table", READERS, url, root)
    except BackendError:
        known = ", ".join(f"{s}://" for s in READERS)
        raise SourceError(
            f"no table reader for {redact_url(url)!r}; known schemes: {known}"
        ) from None


def encode_value(value: Any) -> Any:
    """A cursor or key value as JSON that decodes to the same value and type; aware times in
    UTC, so a session time zone never changes a position or an event id.

    >>> encode_value(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    {'timestamptz': '2026-01-02T03:04:05.000006+00:00'}
    >>> decode_value(encode_value(Decimal("1.50")))
    Decimal('1.50')
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return {"timestamp": value.isoformat()}
        return {"timestamptz": value.astimezone(UTC).isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"numeric": str(value)}
    if isinstance(value, UUID):
        return {"uuid": str(value)}
    raise SourceError(
        f"cannot keep a position on a {type(value).__name__} value ({value!r}); use a "
        "timestamp, date, number, string or UUID column as the cursor and key"
    )


_DECODERS: dict[str, Callable[[str], Any]] = {
    "timestamp": datetime.fromisoformat,
    "timestamptz": datetime.fromisoformat,
    "date": date.fromisoformat,
    "numeric": Decimal,
    "uuid": UUID,
}


def decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        ((tag, text),) = value.items()
        return _DECODERS[tag](text)
    return value


def event_id(table: str, keys: Sequence[Any], cursor: Any) -> str:
    """The id of one version of a row: the same row read twice gets the same id, so the log
    appends it once; an update that moves the cursor is a new event."""
    text = orjson.dumps([table, [encode_value(k) for k in keys], encode_value(cursor)])
    return hashlib.sha256(text).hexdigest()[:32]


def event_value(value: Any, text: bool = False) -> Any:
    """A database value as the stream validator understands it; with ``text`` (the field is a
    string), an integer as its digits: a table's bigint id keys a stream's string key.

    >>> event_value(Decimal("2.50")), event_value(42, text=True), event_value(True, text=True)
    (2.5, '42', True)
    """
    if text and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


def text_fields(stream: Stream) -> frozenset[str]:
    """The stream's string fields (its id field included)."""
    strings = {f for f, spec in stream.fields.items() if spec.dtype is DType.STRING}
    return frozenset({*strings, stream.id_field})


def field_mapping(
    source: TableSource | ChangeSource,
    available: Sequence[str],
    needed: Sequence[str] = (),
    filled: Sequence[str] = (),
) -> dict[str, str]:
    """Which stream field each table column feeds: ``source.columns``, or every column named
    like a field; every column named (and ``needed``) must exist, and every required field of
    the stream must be fed (or ``filled`` by the source itself)."""
    stream = source.stream
    if source.columns is not None:
        mapping = source.columns
    else:
        known = {*stream.fields, stream.id_field} - set(filled)
        mapping = {c: c for c in available if c in known}
        fed = {*mapping.values(), *filled}
        missing = [f for f, s in stream.fields.items() if not s.nullable and f not in fed]
        if missing:
            raise SourceError(
                f"source {source.name!r}: table {source.table!r} has no column for the "
                f"required field {missing[0]!r} of stream {stream.name!r}; map one with "
                f'columns={{"<column>": {missing[0]!r}, ...}}'
            )
    for column in (*needed, *mapping):
        if column not in available:
            raise SourceError(
                f"source {source.name!r}: table {source.table!r} has no column {column!r}"
                + did_you_mean(column, available)
            )
    return mapping


class PositionedPoller:
    """What the pollers of database sources share: the source, its reader, how events are
    ingested, and the checkpoint document in the metadata store (a position and counts)."""

    def __init__(
        self,
        source: Any,
        reader: Any,
        ingest: Ingest,
        metadata: MetadataStore,
        clock: Callable[[], int],
    ) -> None:
        self.source, self._reader, self._ingest = source, reader, ingest
        self._metadata, self._clock = metadata, clock

    def checkpoint(self) -> dict[str, Any] | None:
        return self._metadata.get_records(TABLE_POSITIONS).get(self.source.name)

    def _save(self, doc: dict[str, Any]) -> dict[str, Any]:
        doc = {**doc, "updated_at": self._clock()}
        self._metadata.put_records([(TABLE_POSITIONS, self.source.name, doc)])
        return doc

    @staticmethod
    def _counted(doc: dict[str, Any], ingested: IngestResult, rows: int) -> dict[str, Any]:
        return {
            **doc,
            "rows": doc["rows"] + rows,
            "accepted": doc["accepted"] + ingested.accepted,
            "rejected": doc["rejected"] + len(ingested.rejected),
        }


class TablePoller(PositionedPoller):
    """Reads a table source's new rows in batches and ingests them, checkpointing after each
    batch: the batch is durable in the log before its position is saved, so a crash between
    the two re-reads the batch, whose events the log recognizes by id."""

    source: TableSource
    _reader: TableReader

    def poll(self, result: PollResult) -> None:
        source = self.source
        doc = self._resume(self.checkpoint())
        after = None if doc["position"] is None else [decode_value(v) for v in doc["position"]]
        query, fields = self._plan()
        texts = text_fields(source.stream)
        n = len(source.order_by)
        cursor_at = query.columns.index(source.cursor)
        key_at = [query.columns.index(k) for k in source.keys]
        while True:
            rows = self._reader.read(query, after, source.batch_size)
            if not rows:
                return
            events = []
            for row in rows:
                if None in row[:n]:  # a NULL breaks the row comparison of the next read
                    raise SourceError(
                        f"source {source.name!r}: a row of {source.table!r} has a NULL in "
                        f"{source.order_by[1:]}; key= must be NOT NULL, e.g. the primary key"
                    )
                event = {field: event_value(row[i], field in texts) for i, field in fields}
                if event.get(source.stream.id_field) is None:
                    keys = [row[i] for i in key_at]
                    event[source.stream.id_field] = event_id(source.table, keys, row[cursor_at])
                events.append(event)
            ingested = self._ingest(source.stream.name, events)
            after = list(rows[-1][:n])
            doc = self._advance(doc, after, ingested, len(rows))
            result.add(ingested.accepted, ingested.duplicates, len(ingested.rejected), len(rows))
            if len(rows) < source.batch_size:
                return

    def reset(self) -> None:
        self._metadata.put_records([(TABLE_POSITIONS, self.source.name, self._fresh())])

    def _fresh(self) -> dict[str, Any]:
        source = self.source
        return {
            "table": source.table,
            "order_by": list(source.order_by),
            "position": None,
            "rows": 0,
            "accepted": 0,
            "rejected": 0,
            "updated_at": None,
        }

    def _resume(self, doc: dict[str, Any] | None) -> dict[str, Any]:
        if doc is None:
            return self._fresh()
        source = self.source
        if (doc["table"], doc.get("order_by")) != (source.table, list(source.order_by)):
            raise SourceError(
                f"source {source.name!r} has a position in {doc['table']!r} ordered by "
                f"{tuple(doc.get('order_by') or ('its changes',))}, but it now reads "
                f"{source.table!r} ordered by {source.order_by}; run "
                f"`headwater source reset {source.name}` to read the table from its start"
            )
        return doc

    def _advance(
        self, doc: dict[str, Any], after: list[Any], ingested: IngestResult, rows: int
    ) -> dict[str, Any]:
        position = [encode_value(v) for v in after]
        return self._save(self._counted({**doc, "position": position}, ingested, rows))

    def _plan(self) -> tuple[TableQuery, list[tuple[int, str]]]:
        """The columns to select (the ordering ones first) and where each field comes from."""
        source = self.source
        available = self._reader.columns(source.table)
        mapping = field_mapping(source, available, source.order_by)
        selected = (*source.order_by, *(c for c in mapping if c not in source.order_by))
        fields = [(selected.index(c), f) for c, f in mapping.items()]
        return TableQuery(source.table, selected, source.order_by, source.delay_us), fields
