"""Archiving the log into the offline store, incrementally and checkpointed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import orjson
import pyarrow as pa

from headwater.definitions import DType, Stream
from headwater.log.base import Log, Record
from headwater.stores.offline.base import OfflineStore

ARROW_TYPES = {
    DType.STRING: pa.string(),
    DType.INT: pa.int64(),
    DType.FLOAT: pa.float64(),
    DType.BOOL: pa.bool_(),
    DType.TIMESTAMP: pa.int64(),  # microseconds since the epoch, UTC, as in the log
}
_LOGGER = logging.getLogger("headwater.history.archiver")
META_COLUMNS = ("_offset", "_event_id", "_event_time", "_ingest_time", "_partition")


def history_schema(stream: Stream) -> pa.Schema:
    """The columns of a stream's history: log metadata, then the typed fields."""
    fields = [
        pa.field("_offset", pa.int64()),
        pa.field("_event_id", pa.string()),
        pa.field("_event_time", pa.int64()),
        pa.field("_ingest_time", pa.int64()),
        pa.field("_partition", pa.int32()),  # the log partition; ``_offset`` counts within it
    ]
    fields += [pa.field(name, ARROW_TYPES[f.dtype]) for name, f in stream.fields.items()]
    if stream.unknown_fields == "keep":
        fields.append(pa.field("_extra", pa.string()))
    return pa.schema(fields)


def records_to_table(stream: Stream, records: list[Record]) -> pa.Table:
    schema = history_schema(stream)
    rows = [orjson.loads(r.payload) for r in records]
    columns: dict[str, pa.Array] = {
        "_offset": pa.array([r.offset for r in records], pa.int64()),
        "_event_id": pa.array([r.event_id for r in records], pa.string()),
        "_event_time": pa.array([r.event_time for r in records], pa.int64()),
        "_ingest_time": pa.array([r.ingest_time for r in records], pa.int64()),
        "_partition": pa.array([r.partition for r in records], pa.int32()),
    }
    for name, f in stream.fields.items():
        columns[name] = pa.array([row.get(name) for row in rows], ARROW_TYPES[f.dtype])
    if stream.unknown_fields == "keep":
        known = set(stream.fields) | {stream.id_field}
        columns["_extra"] = pa.array(
            [
                orjson.dumps({k: v for k, v in row.items() if k not in known}).decode()
                for row in rows
            ],
            pa.string(),
        )
    return pa.Table.from_pydict(columns, schema=schema)


class Archiver:
    """Copies each stream's new log records into the offline store, partition by partition.

    The store commits the files of a batch together with its end offset, so a crash at any
    point leaves either the old or the new history, and the next run resumes from the marker.
    With ``sorted_history``, each run then keeps the stream's sorted copies current enough
    (``features.sorted_history.refresh``): one per key tuple in ``sorted_by`` (stream name ->
    the key tuples its features' entities have), or, without it, one by the stream's keys.
    """

    def __init__(
        self,
        log: Log,
        offline: OfflineStore,
        batch_size: int = 250_000,
        sorted_history: bool = True,
        sorted_by: Mapping[str, Sequence[tuple[str, ...]]] | None = None,
    ) -> None:
        self._log, self._offline, self._batch = log, offline, batch_size
        self._sorted_history, self._sorted_by = sorted_history, sorted_by

    def sorted_keys(self, stream: Stream) -> list[tuple[str, ...]]:
        """The key tuples the stream's history is kept sorted by (none with the copies off)."""
        if not self._sorted_history:
            return []
        if self._sorted_by is None:
            return [tuple(stream.keys)]
        return [tuple(keys) for keys in self._sorted_by.get(stream.name, [])]

    def catch_up(self, stream: Stream, progress: Callable[[int], None] | None = None) -> int:
        """Archive everything the log holds for the stream now; returns the records added.

        Each partition is read until a read finds nothing: the log's end offset is not
        trusted (a Kafka broker's high watermark may lag), nor are offsets dense."""
        added = 0
        committed: dict[int, int] = {}
        for partition in range(self._log.partitions(stream.name)):
            start = committed[partition] = self._offline.committed(stream.name, partition)
            while records := self._log.read(stream.name, start, self._batch, partition):
                end = records[-1].offset + 1
                table = records_to_table(stream, records)
                self._offline.append(stream.name, table, start, end, partition)
                added += len(records)
                start = committed[partition] = end
                if progress is not None:
                    progress(len(records))
        if added:  # a backfill out of time order leaves many small files a day
            self._offline.compact(stream.name)
        if self._sorted_history:
            from headwater.history.sorted_history import refresh  # it imports this module

            try:
                for keys in self.sorted_keys(stream):
                    refresh(self._offline, stream, committed, keys)
            except Exception:  # noqa: BLE001
                # the copy only makes training sets faster: whatever goes wrong with it (a
                # full disk, or a bug), archiving, which everything else waits on, goes on
                _LOGGER.exception(
                    "stream %r: sorting its history failed; training sets use the join",
                    stream.name,
                )
        return added
