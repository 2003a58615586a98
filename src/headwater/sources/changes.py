"""Polling a change source: a consistent snapshot of the table, then its recorded changes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import closing
from typing import Any

import orjson

from headwater.definitions.source import ChangeSource
from headwater.definitions.types import from_micros
from headwater.ingestion.service import IngestResult
from headwater.sources.base import Change, ChangeReader, PollResult, SourceError
from headwater.sources.table import PositionedPoller, event_value, field_mapping, text_fields
from headwater.stores.metadata.base import MetadataStore

Ingest = Callable[[str, list[Any]], IngestResult]


def change_id(table: str, *parts: Any) -> str:
    """The id of one snapshot row (``"snapshot"``, its key and its content) or one change
    (its transaction and order): read twice, it is appended once by a log that deduplicates."""
    text = orjson.dumps([table, *parts], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(text).hexdigest()[:32]


class ChangePoller(PositionedPoller):
    """Reads a change source: the first poll installs the capture, then reads the table as
    one snapshot (checkpointed once whole: a crash during it reads it again, with the same
    event ids for unchanged rows), then every poll reads the changes recorded since, in
    batches, checkpointing the position after each (the batch is durable in the log first,
    so a crash between the two re-reads it, with the same ids)."""

    source: ChangeSource
    _reader: ChangeReader

    def __init__(
        self,
        source: ChangeSource,
        reader: ChangeReader,
        ingest: Ingest,
        metadata: MetadataStore,
        clock: Callable[[], int],
    ) -> None:
        super().__init__(source, reader, ingest, metadata, clock)
        self._texts = text_fields(source.stream)

    def poll(self, result: PollResult) -> None:
        source = self.source
        doc = self._resume(self.checkpoint())
        mapping = field_mapping(
            source,
            self._reader.columns(source.table),
            source.keys,
            [f for f in (source.operation, source.changed_at) if f is not None],
        )
        if not doc["installed"]:
            self._reader.install(source.table)
            doc = self._save({**doc, "installed": True})
        if source.snapshot and doc["snapshot"] is None:
            doc = self._read_snapshot(doc, mapping, result)
        after = None if doc["position"] is None else (doc["position"][0], doc["position"][1])
        while True:
            changes = self._reader.changes(source.table, after, source.batch_size, doc["snapshot"])
            if not changes:
                return
            events = [self._event(c.operation, c.changed_at, c.row, mapping, c) for c in changes]
            ingested = self._ingest(source.stream.name, events)
            after = (changes[-1].xid, changes[-1].seq)
            doc = self._save(self._counted({**doc, "position": list(after)}, ingested, len(events)))
            result.add(ingested.accepted, ingested.duplicates, len(ingested.rejected), len(events))
            self._reader.prune(source.table, after, source.retention_us / 1e6)
            if len(changes) < source.batch_size:
                return

    def _read_snapshot(
        self, doc: dict[str, Any], mapping: dict[str, str], result: PollResult
    ) -> dict[str, Any]:
        """Ingest the table's rows as of one snapshot; changes made by transactions that the
        snapshot saw are then left out of the change reads (their rows are in it)."""
        source = self.source
        # closed on any error, so the snapshot's transaction never outlives the poll
        with closing(self._reader.snapshot(source.table, source.batch_size)) as rows:
            token = next(rows)
            assert isinstance(token, str)
            for batch in rows:
                assert isinstance(batch, list)
                events = [self._event("snapshot", None, row, mapping, None) for row in batch]
                ingested = self._ingest(source.stream.name, events)
                result.add(
                    ingested.accepted, ingested.duplicates, len(ingested.rejected), len(events)
                )
                doc = self._counted(doc, ingested, len(events))
        return self._save({**doc, "snapshot": token})

    def _event(
        self,
        operation: str,
        changed_at: Any,
        row: dict[str, Any],
        mapping: dict[str, str],
        change: Change | None,
    ) -> dict[str, Any]:
        source = self.source
        texts = self._texts
        event = {f: event_value(row.get(c), f in texts) for c, f in mapping.items()}
        if source.operation is not None:
            event[source.operation] = operation
        if source.changed_at is not None:
            # a snapshot row changed at some unknown time before it: it is seen now
            seen = changed_at if changed_at is not None else from_micros(self._clock())
            event[source.changed_at] = seen
        if event.get(source.stream.id_field) is None:
            keys = [row.get(k) for k in source.keys]
            if change is None:
                event[source.stream.id_field] = change_id(source.table, "snapshot", keys, row)
            else:
                event[source.stream.id_field] = change_id(source.table, change.xid, change.seq)
        return event

    def reset(self) -> None:
        """Forget the position: the next poll reads a new snapshot, then the changes after
        it (the capture stays installed)."""
        self._save(self._fresh())

    def _fresh(self) -> dict[str, Any]:
        source = self.source
        return {
            "table": source.table,
            "changes": True,
            "installed": False,
            "snapshot": None,
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
        if doc["table"] != source.table or not doc.get("changes"):
            raise SourceError(
                f"source {source.name!r} has a position in {doc['table']!r} of another kind of "
                f"source; run `headwater source reset {source.name}` to read {source.table!r} "
                "from a new snapshot"
            )
        return doc
