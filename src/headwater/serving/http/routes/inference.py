"""``/v2``: the Open Inference Protocol's REST API (KServe v2) for every service: health,
server and model metadata, readiness, and inference by entity-key tensors. Errors answer
``{"error": reason}`` as the protocol asks (400 for a malformed request, 404 for an unknown
service or version, 503 when no version is promoted)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from headwater.serving import inference
from headwater.serving.http.heavy import answer_off_loop
from headwater.serving.http.services import HttpServices
from headwater.serving.inference import InferenceError, Tensor

router = APIRouter(tags=["open inference protocol (v2)"])
STATUS = {"invalid": 400, "not_found": 404, "unavailable": 503}


class TensorIn(BaseModel):
    name: str
    shape: list[int]
    datatype: str = Field(description="BYTES for entity keys; BOOL, INT*, UINT*, FP* for context")
    data: list[Any]
    parameters: dict[str, Any] | None = None


class OutputIn(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """KServe's inference request: one BYTES input per entity key, one row per entity."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[TensorIn]
    outputs: list[OutputIn] | None = None


class TensorOut(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[TensorOut]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ErrorOut(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "a malformed request: the reason"},
    404: {"model": ErrorOut, "description": "no such service, or it serves no such version"},
    503: {"model": ErrorOut, "description": "no model version is promoted for the service"},
}
_INFER_BODY = {
    "content": {"application/json": {"schema": InferRequest.model_json_schema()}},
    "required": True,
}


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(exc: InferenceError) -> Response:
    return _json(STATUS[exc.kind], {"error": str(exc)})


@router.get("/v2", response_model=ServerMetadata)
async def server_metadata() -> Any:
    """The server's name and version."""
    return inference.server_metadata()


@router.get("/v2/health/live", responses={200: {"description": "the process is up"}})
async def live() -> Any:
    return {"live": True}


@router.get("/v2/health/ready", responses={503: {"description": "a required service is not ready"}})
async def server_ready(request: Request) -> Response:
    """Ready when every required service's model versions are loaded (``/readyz`` says
    which are not, and why)."""
    services: HttpServices = request.app.state.services
    ok = await run_in_threadpool(lambda: inference.server_ready(services.serving))
    return _json(200 if ok else 503, {"ready": ok})


@router.get("/v2/models/{name}", response_model=ModelMetadata, responses=ERRORS)
async def model_metadata(name: str, request: Request) -> Response:
    """A service as a model: the versions it serves, its inputs (entity keys, context) and
    outputs (score, prediction id, variant, model version, unknown entity)."""
    return await _metadata(request, name, None)


@router.get("/v2/models/{name}/versions/{version}", response_model=ModelMetadata, responses=ERRORS)
async def version_metadata(name: str, version: str, request: Request) -> Response:
    return await _metadata(request, name, version)


async def _metadata(request: Request, name: str, version: str | None) -> Response:
    services: HttpServices = request.app.state.services
    try:
        found = await run_in_threadpool(inference.metadata, services.serving, name, version)
    except InferenceError as exc:
        return _error(exc)
    return _json(200, found)


@router.get("/v2/models/{name}/ready", responses=ERRORS)
async def model_ready(name: str, request: Request) -> Response:
    """200 when every variant's model version is loaded, or registered and loaded at the
    first call (a required service: loaded), 503 otherwise."""
    return await _ready(request, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready", responses=ERRORS)
async def version_ready(name: str, version: str, request: Request) -> Response:
    return await _ready(request, name, version)


async def _ready(request: Request, name: str, version: str | None) -> Response:
    services: HttpServices = request.app.state.services
    try:
        ok = await run_in_threadpool(inference.ready, services.serving, name, version)
    except InferenceError as exc:
        return _error(exc)
    return _json(200 if ok else 503, {"name": name, "ready": ok})


@router.post(
    "/v2/models/{name}/infer",
    response_model=InferResponse,
    responses=ERRORS,
    openapi_extra={"requestBody": _INFER_BODY},
)
async def infer(name: str, request: Request) -> Response:
    """Predict for the entities of the input tensors (scope ``predict:SERVICE``): the same
    routing, online features, model call and prediction log as ``/v1/predict``."""
    status, body = await answer_off_loop(_answer, request.app, await request.body(), name, None)
    return Response(body, status_code=status, media_type="application/json")


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    response_model=InferResponse,
    responses=ERRORS,
    openapi_extra={"requestBody": _INFER_BODY},
)
async def infer_version(name: str, version: str, request: Request) -> Response:
    """As ``/v2/models/{name}/infer``, answered by the variant serving ``version``."""
    body = await request.body()
    status, out = await answer_off_loop(_answer, request.app, body, name, version)
    return Response(out, status_code=status, media_type="application/json")


def _answer(app: Any, body: bytes, name: str, version: str | None) -> tuple[int, bytes]:
    services: HttpServices = app.state.services
    start = time.perf_counter()
    try:
        request_id, inputs, requested, k = parse(body)
        outputs, answered = inference.infer(
            services.serving, name, version, inputs, requested, services.max_entities, "v2", k
        )
    except InferenceError as exc:
        return STATUS[exc.kind], orjson.dumps({"error": str(exc)})
    observe = app.state.metrics.for_service(name)
    observe.predict_latency.observe(time.perf_counter() - start)
    variants = next((o.data for o in outputs if o.name == "variant"), [])
    for variant in variants:
        observe.predictions(variant).inc()
    answer: dict[str, Any] = {"model_name": name, "model_version": answered}
    if request_id is not None:
        answer["id"] = request_id
    answer["outputs"] = [t.as_dict() for t in outputs]
    return 200, orjson.dumps(answer)


def parse(body: bytes) -> tuple[str | None, list[Tensor], list[str] | None, int | None]:
    """(id, input tensors with their data flattened, requested output names or None, the
    ``k`` of a ranking request from its ``parameters`` or None)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InferenceError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), list):
        raise InferenceError('send {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    request_id = data.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InferenceError('"id" must be a string')
    tensors = [_tensor(t) for t in data["inputs"]]
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InferenceError('"parameters" must be an object')
    k = parameters.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int)):
        raise InferenceError(f"parameter k must be a whole number, not {k!r}")
    outputs = data.get("outputs")
    if outputs is None:
        return request_id, tensors, None, k
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InferenceError('"outputs" must be a list of {"name": ...}')
    return request_id, tensors, [o["name"] for o in outputs], k


def _tensor(doc: Any) -> Tensor:
    if not isinstance(doc, dict):
        raise InferenceError("each input must be an object with name, shape, datatype, data")
    name, shape, datatype, data = (doc.get(k) for k in ("name", "shape", "datatype", "data"))
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise InferenceError('each input needs a "name" and a "datatype" (strings)')
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise InferenceError(f'input {name!r}: "shape" must be a list of integers')
    if not isinstance(data, list):
        raise InferenceError(f'input {name!r}: "data" must be a list')
    return Tensor(name, datatype, shape, _flat(data, name))


def _flat(data: list[Any], name: str, depth: int = 0) -> list[Any]:
    """Row-major data as one list (the protocol allows nested lists of the shape)."""
    if depth > 8:
        raise InferenceError(f"input {name!r}: data nested deeper than its shape")
    out: list[Any] = []
    for item in data:
        out.extend(_flat(item, name, depth + 1) if isinstance(item, list) else [item])
    return out
