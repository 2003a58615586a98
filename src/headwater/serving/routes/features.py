"""``GET/POST /v1/features``: online feature values by entity, at now."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from headwater.definitions.types import from_micros, to_micros
from headwater.project.project import Project

router = APIRouter(tags=["features"])


class FeaturesRequest(BaseModel):
    entities: list[dict[str, Any]] = Field(
        ...,
        description="One object per entity: its keys and any request context",
        examples=[[{"user_id": "u42"}]],
    )
    features: list[str] = Field(..., examples=[["orders_30d", "spend_7d"]])
    at: datetime | None = Field(None, description="Evaluate at this time instead of now")


class FeaturesResponse(BaseModel):
    at: datetime
    features: list[str]
    results: list[dict[str, Any]]


async def _lookup(
    project: Project, rows: list[dict[str, Any]], names: list[str], at: datetime | None
) -> dict[str, Any]:
    if not names:
        raise HTTPException(422, "name at least one feature")
    at_us = project.now() if at is None else to_micros(at)
    values = await run_in_threadpool(project.online.get, rows, names, at_us)
    return {"at": from_micros(at_us), "features": names, "results": values}


@router.post("/v1/features", response_model=FeaturesResponse)
async def post_features(body: FeaturesRequest, request: Request) -> Any:
    """Feature values for a batch of entities."""
    return await _lookup(request.app.state.project, body.entities, body.features, body.at)


@router.get("/v1/features", response_model=FeaturesResponse)
async def get_features(
    request: Request,
    features: Annotated[list[str], Query(description="Feature names; repeat or comma-separate")],
) -> Any:
    """Feature values for one entity: its keys (and context) are the other query parameters,
    e.g. ``/v1/features?user_id=u42&features=orders_30d,spend_7d``."""
    names = [n.strip() for f in features for n in f.split(",") if n.strip()]
    row = {k: v for k, v in request.query_params.items() if k != "features"}
    return await _lookup(request.app.state.project, [row], names, None)
