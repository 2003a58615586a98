"""``GET/POST /v1/features``: online feature values by entity, at now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from headwater.definitions.types import from_micros, to_micros
from headwater.security.access import Forbidden
from headwater.serving.http.errors import error_answer
from headwater.serving.http.guards import forbidden_features
from headwater.serving.http.heavy import answer_off_loop, too_many
from headwater.serving.http.services import HttpServices

router = APIRouter(tags=["features"])
NAME = "^[a-z][a-z0-9_]*$"  # a feature's name, as definitions allow
NAMES = "^[a-z][a-z0-9_]*(,[a-z][a-z0-9_]*)*$"  # or a comma-separated list of them


FeatureName = Annotated[str, Field(pattern=NAME)]
FEATURE_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "the key lacks features:read for one of the features"},
    404: {"description": "unknown feature"},
    413: {"description": "more entities than [server] max_entities"},
    422: {"description": "an entity lacks a key the features need, or a bad body"},
}


class FeaturesRequest(BaseModel):
    entities: list[dict[str, Any]] = Field(
        ...,
        description="One object per entity: its keys and any request context",
        examples=[[{"user_id": "u42"}]],
    )
    features: list[FeatureName] = Field(..., min_length=1, examples=[["orders_30d", "spend_7d"]])
    at: datetime | None = Field(None, description="Evaluate at this time instead of now")


class FeaturesResponse(BaseModel):
    at: datetime
    features: list[str]
    results: list[dict[str, Any]]


async def _lookup(
    services: HttpServices,
    rows: list[dict[str, Any]],
    names: list[str],
    at: datetime | None,
    key: Any,
) -> dict[str, Any]:
    if not names:
        raise HTTPException(422, "name at least one feature")
    refusal = forbidden_features(services.access, key, names, services.feature_definitions)
    if refusal is not None:
        raise Forbidden(refusal)
    at_us = services.clock() if at is None else to_micros(at)
    values = await run_in_threadpool(services.online.get, rows, names, at_us)
    return {"at": from_micros(at_us), "features": names, "results": values}


def answer(app: Any, body: bytes, key: Any = None) -> tuple[int, bytes]:
    """``POST /v1/features`` without FastAPI's machinery (the fast path): same checks, same
    JSON; ``key`` is the caller's verified API key (None with auth off)."""
    services: HttpServices = app.state.services
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return 422, orjson.dumps({"detail": f"the body is not valid JSON: {exc}"})
    entities = data.get("entities") if isinstance(data, dict) else None
    names = data.get("features") if isinstance(data, dict) else None
    if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
        return 422, orjson.dumps({"detail": '"entities" must be a list of objects'})
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return 422, orjson.dumps({"detail": '"features" must be a list of feature names'})
    if not names:
        return 422, orjson.dumps({"detail": "name at least one feature"})
    if len(entities) > services.max_entities:
        return 413, orjson.dumps({"detail": too_many(len(entities), services.max_entities)})
    refusal = forbidden_features(services.access, key, names, services.feature_definitions)
    if refusal is not None:
        return 403, orjson.dumps({"detail": refusal, "error": "Forbidden"})
    at = data.get("at")
    try:
        at_us = services.clock() if at is None else to_micros(_parse_time(at))
        values = services.online.get(entities, names, at_us)
    except Exception as exc:
        known = error_answer(exc)
        if known is None:
            raise
        return known
    stamp = from_micros(at_us).isoformat().replace("+00:00", "Z")
    return 200, orjson.dumps({"at": stamp, "features": names, "results": values})


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise HTTPException(422, '"at" must be an ISO 8601 time')
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(422, f'"at" is not an ISO 8601 time: {value!r}') from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@router.post(
    "/v1/features",
    response_model=FeaturesResponse,
    responses=FEATURE_RESPONSES,
    openapi_extra={
        "requestBody": {
            "content": {"application/json": {"schema": FeaturesRequest.model_json_schema()}},
            "required": True,
        }
    },
)
async def post_features(request: Request) -> Response:
    """Feature values for a batch of entities (a running server answers in its fast path,
    through the same ``answer``)."""
    body = await request.body()
    key = getattr(request.state, "api_key", None)
    status, out = await answer_off_loop(answer, request.app, body, key)
    return Response(out, status_code=status, media_type="application/json")


@router.get("/v1/features", response_model=FeaturesResponse, responses=FEATURE_RESPONSES)
async def get_features(
    request: Request,
    features: Annotated[
        list[Annotated[str, Field(pattern=NAMES)]],
        Query(min_length=1, description="Feature names; repeat or comma-separate"),
    ],
) -> Any:
    """Feature values for one entity: its keys (and context) are the other query parameters,
    e.g. ``/v1/features?user_id=u42&features=orders_30d,spend_7d``."""
    names = [n.strip() for f in features for n in f.split(",") if n.strip()]
    row = {k: v for k, v in request.query_params.items() if k != "features"}
    key = getattr(request.state, "api_key", None)
    return await _lookup(request.app.state.services, [row], names, None, key)
