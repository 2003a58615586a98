"""``POST /v1/events/{stream}``: a batch of raw JSON events, acknowledged once durable."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from headwater.definitions import Stream
from headwater.ingestion.service import IngestResult
from headwater.serving.http.event_schemas import ingest_body
from headwater.serving.http.guards import caller
from headwater.serving.http.services import HttpServices

router = APIRouter(tags=["events"])


class RejectedEvent(BaseModel):
    index: int
    reason: str


class IngestResponse(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[RejectedEvent]
    offsets: list[int | None]


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it exceeds ``limit`` bytes (declared or not)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(
            413,
            f"request body of {declared} bytes exceeds the limit of "
            f"{limit} bytes; send smaller batches",
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(
                413, f"request body exceeds the limit of {limit} bytes; send smaller batches"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse_events(body: bytes, max_events: int) -> list[Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"the body is not valid JSON: {exc}") from None
    if isinstance(data, dict) and list(data) == ["events"]:  # else: one event
        data = data["events"]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise HTTPException(
            422, 'send a JSON array of events, an object with "events", or a single event object'
        )
    if len(data) > max_events:
        raise HTTPException(413, f"{len(data)} events in one request; the limit is {max_events}")
    return data


INGEST_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body is not valid JSON"},
    404: {"description": "unknown stream"},
    413: {"description": "the body or the number of events is over the limit"},
    422: {
        "description": "every event was rejected (each with its reason: a missing or mistyped "
        "field, an event time before 1970 or past [ingest] max_future, a control character "
        'in a key), or the body is not an event, a list or {"events": [...]}'
    },
    503: {"description": "the log cannot be reached: nothing was stored, retry"},
}


@router.post("/v1/events/{stream}", include_in_schema=False)
async def ingest_events(stream: str, request: Request) -> Any:
    """Any stream (documented one operation per stream by ``add_stream_routes``)."""
    return await ingest(stream, request)


def add_stream_routes(app: Any, streams: Mapping[str, Stream]) -> None:
    """One documented operation per stream, its request body generated from the stream's
    definition (the generic route above answers the same way for every name)."""
    for name, stream in sorted(streams.items()):
        app.add_api_route(
            f"/v1/events/{name}",
            _endpoint(name),
            methods=["POST"],
            response_model=IngestResponse,
            responses=INGEST_RESPONSES,
            openapi_extra={"requestBody": ingest_body(stream)},
            summary=f"Ingest {name} events",
            description=(
                f"{stream.description} (owner: {stream.owner}). Validate and durably append "
                "events; invalid ones are listed with their reason and dead-lettered, the "
                "valid ones beside them are kept. The response comes once the valid events "
                "are durable; an event_id already in the stream is acknowledged again "
                "without being stored twice."
            ),
            tags=["events"],
            operation_id=f"ingest_{name}",
        )


def _endpoint(name: str) -> Callable[[Request], Awaitable[Any]]:
    async def endpoint(request: Request) -> Any:
        return await ingest(name, request)

    return endpoint


async def ingest(stream: str, request: Request) -> Any:
    """Validate and durably append events; invalid ones are listed and dead-lettered."""
    services: HttpServices = request.app.state.services
    body = await read_limited_body(request, services.max_request_bytes)
    events = parse_events(body, services.max_events_per_request)
    services.ingestor.stream(stream)  # 404 before any work
    key_id, team = caller(request.state)

    def ingest() -> IngestResult:
        result = services.ingest(stream, events)
        counts = {
            "events": len(events),
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": len(result.rejected),
        }
        outcome = "rejected" if events and len(result.rejected) == len(events) else "ok"
        services.audit.record(key_id, team, "ingest", stream, outcome, counts)
        return result

    result = await run_in_threadpool(ingest)
    request.app.state.metrics.ingested.labels(stream).inc(result.accepted)
    request.app.state.metrics.rejected.labels(stream).inc(len(result.rejected))
    payload = {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "rejected": [{"index": r.index, "reason": r.reason} for r in result.rejected],
        "offsets": result.offsets,
    }
    if events and len(result.rejected) == len(events):
        raise HTTPException(422, payload)
    return payload
