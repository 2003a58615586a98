"""The history's columns: the log's metadata, then the stream's typed fields."""

from __future__ import annotations

import orjson
import pyarrow as pa

from headwater.definitions import DType, Stream
from headwater.log.base import Record

ARROW_TYPES = {
    DType.STRING: pa.string(),
    DType.INT: pa.int64(),
    DType.FLOAT: pa.float64(),
    DType.BOOL: pa.bool_(),
    DType.TIMESTAMP: pa.int64(),  # microseconds since the epoch, UTC, as in the log
}
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
