"""The gRPC server: the Open Inference Protocol (``inference.GRPCInferenceService``),
headwater's ``headwater.v1.Predictions/Predict`` and the standard health service, on the
predictors of the HTTP server (one code path: routing, online features, model, log).

With keys on, a call carries ``authorization: Bearer <key>`` (or ``x-api-key``) metadata;
inference needs ``predict:SERVICE``, metadata any valid key, liveness, readiness and health
none. Refusals are gRPC status codes: UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT,
NOT_FOUND, UNAVAILABLE.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from headwater.errors import HeadwaterError, StoreUnavailable
from headwater.log.base import LogError
from headwater.security.access import AccessControl
from headwater.security.keys import Unauthenticated
from headwater.security.scopes import Permission
from headwater.serving import inference
from headwater.serving.grpc import (
    headwater_pb2,
    headwater_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
)
from headwater.serving.inference import InferenceError, Tensor
from headwater.serving.runtime import Serving, UnknownServiceError
from headwater.serving.scoring import NoModelVersion

CODES = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}
# datatype -> the field of InferTensorContents holding it, and its struct format (raw bytes)
CONTENTS = {
    "BOOL": ("bool_contents", "?"),
    "INT8": ("int_contents", "b"), "INT16": ("int_contents", "h"),
    "INT32": ("int_contents", "i"), "INT64": ("int64_contents", "q"),
    "UINT8": ("uint_contents", "B"), "UINT16": ("uint_contents", "H"),
    "UINT32": ("uint_contents", "I"), "UINT64": ("uint64_contents", "Q"),
    "FP16": ("fp32_contents", "e"), "FP32": ("fp32_contents", "f"),
    "FP64": ("fp64_contents", "d"), "BYTES": ("bytes_contents", ""),
}  # fmt: skip


class Calls:
    """What both servicers share: the serving runtime, the limits and the key check."""

    def __init__(
        self,
        serving_of: Callable[[], Serving],
        access: AccessControl | None,
        max_entities: int,
    ) -> None:
        self.serving_of, self.access, self.max_entities = serving_of, access, max_entities

    def authorize(self, context: grpc.ServicerContext, permission: Permission | None) -> None:
        """Abort unless the call's key may do ``permission`` (None: any valid key)."""
        if self.access is None:
            return
        token = _token(context.invocation_metadata())
        if token is None:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "an API key is required: send the metadata authorization: Bearer <key>",
            )
            return  # abort raised already
        try:
            key = self.access.authenticate(token)
        except Unauthenticated as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        if permission is not None and not self.access.allows(key, permission):
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"key {key.id} of team {key.team!r} lacks the scope "
                f"{permission.action}:{permission.resource}",
            )


def _token(metadata: Sequence[Any]) -> str | None:
    found = {m.key.lower(): m.value for m in metadata}
    value = found.get("authorization")
    if isinstance(value, str):
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    key = found.get("x-api-key")
    return key if isinstance(key, str) else None


@contextmanager
def answering(context: grpc.ServicerContext) -> Iterator[None]:
    """Expected errors as status codes; anything else is gRPC's INTERNAL (a bug)."""
    try:
        yield
    except InferenceError as exc:
        context.abort(CODES[exc.kind], str(exc))
    except UnknownServiceError as exc:
        context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    except NoModelVersion as exc:
        context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    except (LogError, StoreUnavailable) as exc:
        context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    except (HeadwaterError, ValueError) as exc:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))


class InferenceServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return inference_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        with answering(context):
            ok = inference.server_ready(self.calls.serving_of())
        return inference_pb2.ServerReadyResponse(ready=ok)

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.calls.authorize(context, None)
        with answering(context):
            ok = inference.ready(self.calls.serving_of(), request.name, request.version or None)
        return inference_pb2.ModelReadyResponse(ready=ok)

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.calls.authorize(context, None)
        return inference_pb2.ServerMetadataResponse(**inference.server_metadata())

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.calls.authorize(context, None)
        with answering(context):
            found = inference.metadata(
                self.calls.serving_of(), request.name, request.version or None
            )
        tensor = inference_pb2.ModelMetadataResponse.TensorMetadata
        return inference_pb2.ModelMetadataResponse(
            name=found["name"],
            versions=found["versions"],
            platform=found["platform"],
            inputs=[tensor(**t) for t in found["inputs"]],
            outputs=[tensor(**t) for t in found["outputs"]],
        )

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.calls.authorize(context, Permission("predict", request.model_name))
        with answering(context):
            inputs = tensors_of(request)
            requested = [o.name for o in request.outputs] or None
            outputs, answered = inference.infer(
                self.calls.serving_of(),
                request.model_name,
                request.model_version or None,
                inputs,
                requested,
                self.calls.max_entities,
                "grpc",
                _k(request),
            )
        return inference_pb2.ModelInferResponse(
            model_name=request.model_name,
            model_version=answered,
            id=request.id,
            outputs=[_output(t) for t in outputs],
        )


def _k(request: Any) -> int | None:
    """A ranking request's ``k`` from its parameters (an int64 parameter), or None."""
    if "k" not in request.parameters:
        return None
    parameter = request.parameters["k"]
    if parameter.WhichOneof("parameter_choice") != "int64_param":
        raise InferenceError("parameter k must be an int64_param")
    return int(parameter.int64_param)


def tensors_of(request: Any) -> list[Tensor]:
    """The request's inputs, from their typed contents or from ``raw_input_contents``."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InferenceError(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: give one each"
        )
    out = []
    for i, tensor in enumerate(request.inputs):
        if tensor.datatype not in CONTENTS:
            raise InferenceError(f"input {tensor.name!r}: unknown datatype {tensor.datatype!r}")
        data = _raw(tensor, raw[i]) if raw else _typed(tensor)
        out.append(Tensor(tensor.name, tensor.datatype, list(tensor.shape), data))
    return out


def _typed(tensor: Any) -> list[Any]:
    field, _ = CONTENTS[tensor.datatype]
    values = list(getattr(tensor.contents, field))
    return [_text(tensor.name, v) for v in values] if tensor.datatype == "BYTES" else values


def _raw(tensor: Any, blob: bytes) -> list[Any]:
    """Little-endian elements; BYTES elements each after their 4-byte length."""
    if tensor.datatype != "BYTES":
        fmt = CONTENTS[tensor.datatype][1]
        size = struct.calcsize(fmt)
        if len(blob) % size:
            raise InferenceError(f"input {tensor.name!r}: raw contents are not whole {fmt}")
        return [v[0] for v in struct.iter_unpack("<" + fmt, blob)]
    out, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise InferenceError(f"input {tensor.name!r}: a BYTES element's length is cut")
        (length,) = struct.unpack_from("<I", blob, at)
        if at + 4 + length > len(blob):
            raise InferenceError(f"input {tensor.name!r}: a BYTES element is cut")
        out.append(_text(tensor.name, blob[at + 4 : at + 4 + length]))
        at += 4 + length
    return out


def _text(name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InferenceError(f"input {name!r}: an entity key is not UTF-8 text") from None


def _output(tensor: Tensor) -> Any:
    field, _ = CONTENTS[tensor.datatype]
    data = [v.encode() for v in tensor.data] if tensor.datatype == "BYTES" else tensor.data
    return inference_pb2.ModelInferResponse.InferOutputTensor(
        name=tensor.name,
        datatype=tensor.datatype,
        shape=tensor.shape,
        contents=inference_pb2.InferTensorContents(**{field: data}),
    )


class PredictionsServicer(headwater_pb2_grpc.PredictionsServicer):
    """``Predict``: entity keys in, the ``/v1/predict`` answer out."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.calls.authorize(context, Permission("predict", request.service))
        with answering(context):
            if len(request.entities) > self.calls.max_entities:
                raise InferenceError(
                    f"{len(request.entities)} entities in one request; the limit is "
                    f"{self.calls.max_entities}"
                )
            rows = [
                {**json_format.MessageToDict(e.context), **dict(e.keys)} for e in request.entities
            ]
            if not rows:
                raise InferenceError("no entities: give one or more, each with its keys")
            predictor = self.calls.serving_of().predictor(request.service)
            predictions = predictor.predict(rows, "grpc")
        return headwater_pb2.PredictResponse(
            predictions=[
                headwater_pb2.Prediction(
                    prediction_id=p.prediction_id,
                    score=p.score,
                    variant=p.variant,
                    model=p.model,
                    model_version=p.model_version,
                    entity={k: str(v) for k, v in p.entity.items()},
                    unknown_entity=p.unknown_entity,
                )
                for p in predictions
            ]
        )


class ServerHealth(health.HealthServicer):
    """The standard health service; the server as a whole (service ``""``, what a gRPC
    readiness probe asks) is SERVING when every required service is loaded, as ``/readyz``
    (the gRPC services themselves always serve)."""

    def __init__(self, calls: Calls) -> None:
        super().__init__()
        self._calls = calls

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        if request.service == "":
            try:
                ready = inference.server_ready(self._calls.serving_of())
            except Exception:  # noqa: BLE001 - a store that does not answer: not ready
                ready = False
            serving = health_pb2.HealthCheckResponse
            return serving(status=serving.SERVING if ready else serving.NOT_SERVING)
        return super().Check(request, context)


def build_server(
    serving_of: Callable[[], Serving],
    access: AccessControl | None,
    max_entities: int,
    address: str,
    tls: tuple[str, str] | None = None,
    workers: int = 8,
    reuse_port: bool = False,
) -> tuple[grpc.Server, int]:
    """The gRPC server bound to ``address`` (``host:port``; port 0 picks one), not started;
    and its port. ``reuse_port``: several processes bind the port and the kernel shares the
    connections between them; otherwise a port another process holds is refused."""
    calls = Calls(serving_of, access, max_entities)
    server = grpc.server(
        ThreadPoolExecutor(workers, thread_name_prefix="grpc"),
        options=[("grpc.so_reuseport", int(reuse_port))],
    )
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(calls), server)
    headwater_pb2_grpc.add_PredictionsServicer_to_server(PredictionsServicer(calls), server)
    checks = ServerHealth(calls)
    for name in ("", "inference.GRPCInferenceService", "headwater.v1.Predictions"):
        checks.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        with open(tls[0], "rb") as cert, open(tls[1], "rb") as key:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        port = server.add_secure_port(address, credentials)
    return server, port
