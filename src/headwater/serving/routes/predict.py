"""``POST /v1/predict/{service}``: predictions by entity id, each logged with its features."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from headwater.project.project import Project

router = APIRouter(tags=["predictions"])
log = logging.getLogger("headwater.serving")


class PredictRequest(BaseModel):
    entity: dict[str, Any] | None = Field(
        None, description="One entity's keys and request context", examples=[{"user_id": "u42"}]
    )
    entities: list[dict[str, Any]] | None = Field(None, description="A batch of entities")


class PredictionOut(BaseModel):
    prediction_id: str
    score: float
    variant: str
    model: str
    model_version: int
    entity: dict[str, Any]
    unknown_entity: bool


class PredictResponse(BaseModel):
    predictions: list[PredictionOut]


_REQUEST_SCHEMA = {
    "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    "required": True,
}


@router.post(
    "/v1/predict/{service}",
    response_model=PredictResponse,
    openapi_extra={"requestBody": _REQUEST_SCHEMA},
    responses={
        404: {"description": "unknown service"},
        422: {"description": "missing entity keys or a bad body"},
        503: {"description": "no model version is promoted for the service"},
    },
)
async def predict(service: str, request: Request) -> Response:
    """Fetch the entities' features, run the model version the routing picks, log, answer.

    The hot path of the server: the body is parsed and the answer written with orjson, and
    the call runs on the event loop on purpose — an online read and a model call take well
    under a millisecond, less than handing the work to a thread would cost.
    """
    project: Project = request.app.state.project
    metrics = request.app.state.metrics
    rows = _rows(await request.body())
    start = time.perf_counter()
    try:
        predictor = project.serving.predictor(service)
        predictions = predictor.predict(rows, "http")
    except Exception:
        metrics.model_errors.labels(service).inc()
        raise
    elapsed = time.perf_counter() - start
    metrics.predict_latency.labels(service).observe(elapsed)
    metrics.feature_latency.labels(service).observe(predictor.last_timings.features_s)
    metrics.model_latency.labels(service).observe(predictor.last_timings.model_s)
    for p in predictions:
        metrics.predictions.labels(service, p.variant).inc()
        if p.unknown_entity:
            metrics.unknown_entities.labels(service).inc()
    if log.isEnabledFor(logging.INFO):
        for p in predictions:
            log.info(
                "prediction",
                extra={
                    "prediction_id": p.prediction_id,
                    "service": service,
                    "variant": p.variant,
                    "version": p.model_version,
                },
            )
    body = orjson.dumps({"predictions": [p.response() for p in predictions]})
    return Response(body, media_type="application/json")


def _rows(body: bytes) -> list[dict[str, Any]]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPException(422, 'send {"entity": {...}} or {"entities": [{...}, ...]}')
    rows = data.get("entities")
    if rows is None:
        rows = [data.get("entity") or {}]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise HTTPException(422, '"entities" must be a list of objects')
    return rows
