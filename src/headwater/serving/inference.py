"""The Open Inference Protocol (KServe's v2), independent of its transport: a service is a
model, its inputs are the entity keys (``BYTES``, one row per entity) and the request context,
its outputs the scores with what each prediction recorded. REST (``serving/http``) and gRPC
(``serving/grpc``) translate their messages to ``Tensor`` and call ``infer``, which predicts
through the same predictor, routing and logging as ``/v1/predict``.

>>> rows_of(["user_id"], (), [Tensor("user_id", "BYTES", [2], ["u1", "u2"])], 10)
[{'user_id': 'u1'}, {'user_id': 'u2'}]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from headwater.errors import HeadwaterError
from headwater.serving.runtime import Serving, UnknownServiceError
from headwater.serving.scoring import NoModelVersion

PLATFORM = "headwater"
EXTENSIONS: tuple[str, ...] = ()
NUMERIC = {
    "BOOL": bool,
    "UINT8": int, "UINT16": int, "UINT32": int, "UINT64": int,
    "INT8": int, "INT16": int, "INT32": int, "INT64": int,
    "FP16": float, "FP32": float, "FP64": float,
}  # fmt: skip
DATATYPES = frozenset(NUMERIC) | {"BYTES"}
OUTPUTS = {  # name -> (datatype, what it holds)
    "score": ("FP64", "the model's score (probability or value)"),
    "prediction_id": ("BYTES", "the id the prediction was logged under"),
    "variant": ("BYTES", "the service's variant that answered"),
    "model_version": ("INT64", "the model version that answered"),
    "unknown_entity": ("BOOL", "the online store had never seen the entity"),
}


RANKED = {  # a ranking service's outputs beside its candidate keys, one row per returned
    "rank": ("INT64", "1 for the best candidate"),  # candidate, best first
    "score": OUTPUTS["score"],
    "prediction_id": OUTPUTS["prediction_id"],
    "unknown_entity": ("BOOL", "the online store had never seen the candidate"),
    "variant": OUTPUTS["variant"],
    "model_version": OUTPUTS["model_version"],
    "ranking_id": ("BYTES", "the id shared by every candidate's logged prediction, shape [1]"),
}


class InferenceError(HeadwaterError, ValueError):
    """A request the protocol cannot serve; ``kind`` is ``invalid`` (400 / INVALID_ARGUMENT),
    ``not_found`` (404 / NOT_FOUND) or ``unavailable`` (503 / UNAVAILABLE)."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Tensor:
    """One named tensor, its data flat in row-major order."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape,
                "data": self.data}  # fmt: skip


def service_of(serving: Serving, name: str) -> Any:
    try:
        return serving.service(name)
    except UnknownServiceError as exc:
        raise InferenceError(str(exc), "not_found") from None


def versions(serving: Serving, name: str) -> dict[str, str]:
    """The model versions a service serves now (loaded, or registered and loaded at its
    first call): version -> the variant behind it. Loads nothing."""
    service_of(serving, name)
    out: dict[str, str] = {}
    for variant, state in serving.readiness([name])[name]["variants"].items():
        if state["status"] in ("loaded", "registered", "loading") and "version" in state:
            out.setdefault(str(state["version"]), variant)
    return out


def ready(serving: Serving, name: str, version: str | None = None) -> bool:
    """A service is ready when every variant's version is loaded, or registered and loaded
    at the first call (a required service: loaded); a pinned ``version``: when a variant
    serving it is. Loads nothing (a required service's load starts in the background)."""
    service_of(serving, name)
    entry = serving.readiness([name])[name]
    if version is None:
        return bool(entry["ready"])
    statuses = ("loaded",) if entry["required"] else ("loaded", "registered")
    return any(
        str(state.get("version")) == version and state["status"] in statuses
        for state in entry["variants"].values()
    )


def server_ready(serving: Serving) -> bool:
    """The server is ready when every required service is (``Service(required=True)``)."""
    required = serving.required
    return all(e["ready"] for e in serving.readiness(required).values()) if required else True


def metadata(serving: Serving, name: str, version: str | None = None) -> dict[str, Any]:
    """The model metadata response: the service's versions, inputs and outputs."""
    service = service_of(serving, name)
    served = versions(serving, name)
    if version is not None and version not in served:
        raise InferenceError(_unknown_version(name, version, served), "not_found")
    if service.candidates is None:
        inputs = [{"name": k, "datatype": "BYTES", "shape": [-1]} for k in service.request_keys]
        inputs += [{"name": c, "datatype": "FP64", "shape": [-1]} for c in service.context]
        outputs = [{"name": n, "datatype": d, "shape": [-1]} for n, (d, _) in OUTPUTS.items()]
    else:  # one request entity and its context, any number of candidates
        keys = service.candidates.keys
        inputs = [{"name": k, "datatype": "BYTES", "shape": [1]} for k in service.request_keys]
        inputs += [{"name": k, "datatype": "BYTES", "shape": [-1]} for k in keys]
        inputs += [{"name": c, "datatype": "FP64", "shape": [1]} for c in service.context]
        outputs = [{"name": k, "datatype": "BYTES", "shape": [-1]} for k in keys]
        outputs += [
            {"name": n, "datatype": d, "shape": [1] if n == "ranking_id" else [-1]}
            for n, (d, _) in RANKED.items()
        ]
    return {
        "name": name,
        "versions": sorted(served, key=int),
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": outputs,
    }


def _unknown_version(name: str, version: str, served: Mapping[str, str]) -> str:
    known = ", ".join(sorted(served, key=int)) or "none yet"
    return f"service {name!r} does not serve version {version!r}; it serves: {known}"


def infer(
    serving: Serving,
    name: str,
    version: str | None,
    inputs: Sequence[Tensor],
    requested: Sequence[str] | None,
    max_entities: int,
    path: str,
    k: int | None = None,
) -> tuple[list[Tensor], str]:
    """Predict for the entities of ``inputs`` (pinned to a served ``version`` if given); the
    outputs asked for (all when ``requested`` is None) and the version that answered (or the
    versions, comma-separated, when routing chose several).

    A ranking service takes one request entity (its keys and context, shape ``[1]``) and
    its candidates' keys (shape ``[n]``); it answers the ``k`` best (default: the
    service's), best first, with the candidates' keys and ``rank``."""
    service = service_of(serving, name)
    variant = None
    if version is not None:
        served = versions(serving, name)
        if version not in served:
            raise InferenceError(_unknown_version(name, version, served), "not_found")
        variant = served[version]
    if service.candidates is not None:
        return _rank(serving, service, variant, inputs, requested, max_entities, path, k)
    if k is not None:
        raise InferenceError(f"service {name!r} does not rank: the parameter k is for ranking")
    unknown = [o for o in requested or () if o not in OUTPUTS]
    if unknown:
        raise InferenceError(f"unknown output {unknown[0]!r}; outputs: {', '.join(OUTPUTS)}")
    rows = rows_of(service.request_keys, service.context, inputs, max_entities)
    try:
        predictions = serving.predictor(name).predict(rows, path, variant=variant)
    except NoModelVersion as exc:
        raise InferenceError(str(exc), "unavailable") from None
    columns: dict[str, list[Any]] = {
        "score": [p.score for p in predictions],
        "prediction_id": [p.prediction_id for p in predictions],
        "variant": [p.variant for p in predictions],
        "model_version": [p.model_version for p in predictions],
        "unknown_entity": [p.unknown_entity for p in predictions],
    }
    wanted = list(requested) if requested else list(OUTPUTS)
    outputs = [Tensor(o, OUTPUTS[o][0], [len(predictions)], columns[o]) for o in wanted]
    answered = sorted({str(p.model_version) for p in predictions}, key=int)
    return outputs, ",".join(answered)


def _rank(
    serving: Serving,
    service: Any,
    variant: str | None,
    inputs: Sequence[Tensor],
    requested: Sequence[str] | None,
    max_candidates: int,
    path: str,
    k: int | None,
) -> tuple[list[Tensor], str]:
    """A ranking request: the request entity's row, its candidates' rows, then ``rank``."""
    candidate_keys = list(service.candidates.keys)
    names = [*candidate_keys, *RANKED]
    unknown = [o for o in requested or () if o not in names]
    if unknown:
        raise InferenceError(f"unknown output {unknown[0]!r}; outputs: {', '.join(names)}")
    takes = (*service.request_keys, *candidate_keys)
    for tensor in inputs:
        _check_tensor(tensor, takes, service.context)
    given = [t.name for t in inputs]
    twice = [n for n in dict.fromkeys(given) if given.count(n) > 1]
    if twice:
        raise InferenceError(f"input {twice[0]!r} is given twice")
    request_inputs = [t for t in inputs if t.name not in candidate_keys]
    candidate_inputs = [t for t in inputs if t.name in candidate_keys]
    if not candidate_inputs:
        raise InferenceError(f"missing input {candidate_keys[0]!r}: the candidates' keys (BYTES)")
    absent = [k for k in service.request_keys if k not in given]
    if absent:
        raise InferenceError(f"missing input {absent[0]!r}: the request entity's key (BYTES, [1])")
    request = rows_of(service.request_keys, service.context, request_inputs, max_candidates)
    if len(request) != 1:
        raise InferenceError("a ranking request is for one entity: request inputs of shape [1]")
    candidates = rows_of(candidate_keys, (), candidate_inputs, max_candidates)
    try:
        ranking = serving.predictor(service.name).rank(
            request[0], candidates, k, path, variant=variant
        )
    except NoModelVersion as exc:
        raise InferenceError(str(exc), "unavailable") from None
    except HeadwaterError as exc:  # a bad k, too many candidates: the predictor's reasons
        raise InferenceError(str(exc)) from None
    top = ranking.top
    columns: dict[str, list[Any]] = {key: [p.entity[key] for p in top] for key in candidate_keys}
    columns.update(
        rank=[p.ranked["rank"] for p in top],
        score=[p.score for p in top],
        prediction_id=[p.prediction_id for p in top],
        unknown_entity=[p.unknown_entity for p in top],
        variant=[p.variant for p in top],
        model_version=[p.model_version for p in top],
        ranking_id=[ranking.ranking_id],
    )
    types = {**{key: "BYTES" for key in candidate_keys}, **{n: d for n, (d, _) in RANKED.items()}}
    wanted = list(requested) if requested else names
    outputs = [Tensor(o, types[o], [len(columns[o])], columns[o]) for o in wanted]
    return outputs, ",".join(sorted({str(p.model_version) for p in top}, key=int))


def rows_of(
    keys: Sequence[str], context: Sequence[str], inputs: Sequence[Tensor], limit: int
) -> list[dict[str, Any]]:
    """One request row per entity from the input tensors: every key given, each a vector of
    the same length (shape ``[n]`` or ``[n, 1]``), context values beside them."""
    if not inputs:
        raise InferenceError(f"no inputs: give a BYTES tensor for each of {list(keys)}")
    by_name: dict[str, Tensor] = {}
    for tensor in inputs:
        _check_tensor(tensor, keys, context)
        if tensor.name in by_name:
            raise InferenceError(f"input {tensor.name!r} is given twice")
        by_name[tensor.name] = tensor
    missing = [k for k in keys if k not in by_name]
    if missing:
        raise InferenceError(f"missing input {missing[0]!r}: a BYTES tensor of entity keys")
    sizes = {t.name: t.shape[0] for t in by_name.values()}
    if len(set(sizes.values())) > 1:
        raise InferenceError(f"inputs have different numbers of rows: {sizes}")
    n = next(iter(sizes.values()))
    if n > limit:
        raise InferenceError(f"{n} entities in one request; the limit is {limit}")
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for tensor in by_name.values():
        for row, value in zip(rows, tensor.data, strict=True):
            row[tensor.name] = value
    return rows


def _check_tensor(tensor: Tensor, keys: Sequence[str], context: Sequence[str]) -> None:
    name = tensor.name
    if name not in keys and name not in context:
        expected = ", ".join([*keys, *context])
        raise InferenceError(f"unknown input {name!r}; this service takes: {expected}")
    if tensor.datatype not in DATATYPES:
        raise InferenceError(f"input {name!r}: unknown datatype {tensor.datatype!r}")
    if name in keys and tensor.datatype != "BYTES":
        raise InferenceError(f"input {name!r} is an entity key: its datatype must be BYTES")
    shape = tensor.shape
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 0:
        raise InferenceError(f"input {name!r}: shape {shape} is not [n] or [n, 1]")
    if len(tensor.data) != shape[0]:
        raise InferenceError(
            f"input {name!r}: shape {shape} holds {shape[0]} values, data has {len(tensor.data)}"
        )
    for value in tensor.data:
        _check_value(name, tensor.datatype, value)


def _check_value(name: str, datatype: str, value: Any) -> None:
    if datatype == "BYTES":
        if not isinstance(value, str):
            raise InferenceError(f"input {name!r}: BYTES values must be strings, got {value!r}")
        return
    kind = NUMERIC[datatype]
    ok = isinstance(value, bool) if kind is bool else isinstance(value, int | float)
    if not ok or (kind is int and (isinstance(value, bool) or value != int(value))):
        raise InferenceError(f"input {name!r}: {value!r} is not a {datatype} value")
    if kind is float and not math.isfinite(value):
        raise InferenceError(f"input {name!r}: {value!r} is not a finite number")


def server_metadata() -> dict[str, Any]:
    """The server metadata response: headwater and its version."""
    return {"name": PLATFORM, "version": _version(), "extensions": list(EXTENSIONS)}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("headwater")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
