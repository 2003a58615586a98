"""``POST /v1/predict/{service}``: predictions by entity id, each logged with its features."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from headwater.serving.http.errors import error_answer
from headwater.serving.http.heavy import answer_off_loop, too_many
from headwater.serving.http.services import HttpServices

router = APIRouter(tags=["predictions"])
log = logging.getLogger("headwater.serving")


class PredictRequest(BaseModel):
    entity: dict[str, Any] | None = Field(
        None, description="One entity's keys and request context", examples=[{"user_id": "u42"}]
    )
    entities: list[dict[str, Any]] | None = Field(None, description="A batch of entities")
    candidates: list[Any] | None = Field(
        None,
        description="Ranking services: the candidates' ids (or objects with their keys); all "
        "are scored and logged, the k best are returned in order",
        examples=[["i1", "i2", "i3"]],
    )
    k: int | None = Field(None, description="Ranking: how many to return (default: the service's)")


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


class RankedItem(BaseModel):
    rank: int
    score: float
    prediction_id: str
    unknown_entity: bool


class RankingResponse(BaseModel):
    """A ranking service's answer; each item also carries the candidate's key(s)."""

    ranking_id: str
    variant: str
    model: str
    model_version: int
    scored: int = Field(description="Candidates scored (and logged), returned or not")
    items: list[RankedItem]


_REQUEST_SCHEMA = {
    "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    "required": True,
}


@router.post(
    "/v1/predict/{service}",
    response_model=PredictResponse | RankingResponse,
    openapi_extra={"requestBody": _REQUEST_SCHEMA},
    responses={
        404: {"description": "unknown service"},
        422: {"description": "missing entity keys or a bad body"},
        503: {"description": "no model version is promoted for the service"},
    },
)
async def predict(service: str, request: Request) -> Response:
    """Fetch the entities' features, run the model version the routing picks, log, answer.

    Served by ``PredictFastPath`` in a running server; this route documents the call and
    answers the same way where the fast path is not installed.
    """
    body = await request.body()
    status, out = await answer_off_loop(_answer_service, request.app, body, service)
    return Response(out, status_code=status, media_type="application/json")


def _answer_service(app: Any, body: bytes, service: str) -> tuple[int, bytes]:
    return answer(app, service, body)


def answer(app: Any, service: str, body: bytes) -> tuple[int, bytes]:
    """The whole predict call, as (HTTP status, JSON body).

    The hot path of the server: the body is parsed and the answer written with orjson, and
    the call runs on the event loop on purpose — an online read and a model call take well
    under a millisecond, less than handing the work to a thread would cost.
    """
    services: HttpServices = app.state.services
    metrics = app.state.metrics
    start = time.perf_counter()
    try:
        data = _body(body)
        predictor = services.serving.predictor(service)
        if "candidates" in data:
            return _rank(predictor, data, metrics, service, start, services.max_entities)
        predictions = predictor.predict(_rows(data, services.max_entities), "http")
    except Exception as exc:
        known = error_answer(exc)
        if known is None or known[0] >= 500:
            metrics.model_errors.labels(service).inc()
        if known is None:
            raise
        return known
    elapsed = time.perf_counter() - start
    timings = predictor.last_timings
    observe = metrics.for_service(service)
    observe.predict_latency.observe(elapsed)
    observe.feature_latency.observe(timings.features_s)
    observe.model_latency.observe(timings.model_s)
    for p in predictions:
        observe.predictions(p.variant).inc()
        if p.unknown_entity:
            observe.unknown_entities.inc()
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
    return 200, orjson.dumps({"predictions": [p.response() for p in predictions]})


def _body(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPException(
            422,
            'send {"entity": {...}}, {"entities": [{...}, ...]} or {"entity": {...}, '
            '"candidates": [...]}',
        )
    return data


def _rows(data: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    rows = data.get("entities")
    if rows is None:
        rows = [data.get("entity") or {}]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise HTTPException(422, '"entities" must be a list of objects')
    if len(rows) > limit:
        raise HTTPException(413, too_many(len(rows), limit))
    return rows


def _rank(
    predictor: Any, data: dict[str, Any], metrics: Any, service: str, start: float, limit: int
) -> tuple[int, bytes]:
    """A ranking request: one entity, its candidates, optionally ``k``."""
    entity, candidates = data.get("entity") or {}, data["candidates"]
    if not isinstance(entity, dict):
        raise HTTPException(422, '"entity" must be an object')
    if not isinstance(candidates, list):
        raise HTTPException(422, '"candidates" must be a list of ids or objects')
    if len(candidates) > limit:
        raise HTTPException(413, too_many(len(candidates), limit))
    ranking = predictor.rank(entity, candidates, data.get("k"), "http")
    observe = metrics.for_service(service)
    observe.predict_latency.observe(time.perf_counter() - start)
    observe.feature_latency.observe(predictor.last_timings.features_s)
    observe.model_latency.observe(predictor.last_timings.model_s)
    observe.predictions(ranking.variant).inc(ranking.scored)
    return 200, orjson.dumps(ranking.response(predictor.service.candidates.keys))
