"""The OpenAPI request body of ``POST /v1/events/{stream}``, generated from each stream's
definition: its fields with their types, which are required, whether unknown fields are
allowed, and the bounds that are static (event times from 1970; key characters). The bound
that moves with the clock (``[ingest] max_future``) is documented as the 422 it gives.
"""

from __future__ import annotations

from typing import Any

from headwater.definitions import DType, Stream
from headwater.ingestion.validate import MAX_TIMESTAMP_US, MIN_TIMESTAMP_US

NO_CONTROL = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
SINCE_1970 = "^(19[7-9][0-9]|[2-9][0-9]{3})-"


def _field(stream: Stream, name: str, dtype: DType) -> dict[str, Any]:
    if dtype is DType.STRING:
        return {"type": "string", **({"pattern": NO_CONTROL} if name in stream.keys else {})}
    if dtype is DType.INT:
        return {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
    if dtype is DType.FLOAT:
        return {"type": "number"}
    if dtype is DType.BOOL:
        return {"type": "boolean"}
    event_time = name == stream.time
    low = 0 if event_time else MIN_TIMESTAMP_US // 1_000_000
    text: dict[str, Any] = {"type": "string", "format": "date-time"}
    if event_time:  # an event time from 1970 on
        text["pattern"] = SINCE_1970
    return {
        "anyOf": [
            text,
            {
                "type": "number",
                "minimum": low,
                "maximum": MAX_TIMESTAMP_US // 1_000_000,
                "description": "seconds since 1970-01-01 UTC",
            },
        ]
    }


def event_schema(stream: Stream) -> dict[str, Any]:
    """The JSON schema of one event of ``stream``."""
    properties: dict[str, Any] = {}
    for name, spec in stream.fields.items():
        schema = _field(stream, name, spec.dtype)
        if spec.nullable:
            schema = {"anyOf": [schema, {"type": "null"}]}
        properties[name] = schema
    properties[stream.id_field] = {
        "anyOf": [
            {"type": "string", "minLength": 1, "maxLength": 256, "pattern": NO_CONTROL},
            {"type": "null"},
        ],
        "description": "Optional (absent or null: one is made): an event sent again with the "
        "same id is stored once",
    }
    time_note = (
        f"{stream.time!r} is the event time: from 1970 to at most [ingest] max_future after "
        "the server's clock (later: rejected with the reason)"
    )
    return {
        "type": "object",
        "title": f"{stream.name} event",
        "description": f"{stream.description} {time_note}.",
        "properties": properties,
        "required": sorted(n for n, s in stream.fields.items() if not s.nullable),
        "additionalProperties": stream.unknown_fields != "reject",
    }


def ingest_body(stream: Stream) -> dict[str, Any]:
    """The request body: an array of events, ``{"events": [...]}``, or one event."""
    event = event_schema(stream)
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"type": "array", "items": event},
                        {
                            "type": "object",
                            "properties": {"events": {"type": "array", "items": event}},
                            "required": ["events"],
                            "additionalProperties": False,
                        },
                        event,
                    ]
                }
            }
        },
    }
