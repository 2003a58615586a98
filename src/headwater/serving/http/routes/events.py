"""``POST /v1/events/{stream}``: a batch of raw JSON events, acknowledged once durable."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from headwater.ingestion.service import IngestResult
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
    if isinstance(data, dict) and "events" in data:
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


@router.post(
    "/v1/events/{stream}",
    response_model=IngestResponse,
    responses={
        404: {"description": "unknown stream"},
        413: {"description": "request too large"},
        422: {"description": "every event was rejected, or the body is not a list"},
    },
)
async def ingest_events(stream: str, request: Request) -> Any:
    """Validate and durably append events; invalid ones are listed and dead-lettered.

    The response comes only after the valid events are durable in the log. Events carrying an
    ``event_id`` already in the stream are acknowledged again without being appended twice.
    """
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
