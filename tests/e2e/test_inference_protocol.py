"""The Open Inference Protocol on a real `headwater serve --grpc-port` with keys on: KServe's
documented REST payloads and a real gRPC client (the stubs from our .proto) get the same
scores as `/v1/predict`, through the same routing and prediction log; bad tensors, unknown
services and versions, missing keys and scopes get a 4xx with the reason or the matching gRPC
status code."""

from __future__ import annotations

import datetime as dt
import struct
import time

import grpc
import httpx
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headwater import Project
from headwater.serving.grpc import (
    headwater_pb2,
    headwater_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
)
from tests.conftest import write_project
from tests.e2e.servers import free_port, start_server
from tests.unit.serving.test_predict import SERVICES
from tests.unit.training.conftest import visits

USERS = ["u1", "u2", "u3", "nobody"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = write_project(tmp_path_factory.mktemp("oip") / "p", SERVICES)
    with open(folder / "headwater.toml", "a") as toml:
        toml.write('\n[server]\nauth = "keys"\nmax_entities = 50\n')
    with Project(folder) as p:
        p.ingest("visits", visits(users=60, end=dt.datetime.now(dt.UTC)))
        p.process()
        p.promote("churn", p.train("churn").version)
        p.promote("churn", p.train("churn").version, alias="challenger", force=True)
        keys = {
            "admin": p.create_key("platform", ["admin"])[1],
            "risk": p.create_key("apps", ["predict:risk", "predict:risk_ab"])[1],
            "none": p.create_key("apps", ["ingest:visits"])[1],
        }
    port, grpc_port = free_port(), free_port()
    proc = start_server(folder, port, "--grpc-port", str(grpc_port), "--preload")
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    try:
        yield folder, f"http://127.0.0.1:{port}", channel, keys
    finally:
        channel.close()
        proc.terminate()
        proc.wait(timeout=30)


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _v1(base: str, key: str, service: str = "risk") -> list[dict]:
    body = {"entities": [{"user_id": u} for u in USERS]}
    answer = httpx.post(f"{base}/v1/predict/{service}", json=body, headers=_bearer(key))
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


def _outputs(answer: dict) -> dict[str, list]:
    return {o["name"]: o["data"] for o in answer["outputs"]}


def test_kserve_rest_payloads_score_as_v1_predict_and_are_logged(server):
    folder, base, _, keys = server
    expected = [p["score"] for p in _v1(base, keys["risk"])]
    body = {
        "id": "request-7",
        "inputs": [{"name": "user_id", "shape": [4, 1], "datatype": "BYTES",
                    "data": [[u] for u in USERS]}],
    }  # fmt: skip
    answer = httpx.post(f"{base}/v2/models/risk/infer", json=body, headers=_bearer(keys["risk"]))
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert (doc["model_name"], doc["model_version"], doc["id"]) == ("risk", "1", "request-7")
    out = _outputs(doc)
    assert out["score"] == expected
    assert out["unknown_entity"] == [False, False, False, True]
    assert {o["name"]: o["datatype"] for o in doc["outputs"]} == {
        "score": "FP64", "prediction_id": "BYTES", "variant": "BYTES",
        "model_version": "INT64", "unknown_entity": "BOOL",
    }  # fmt: skip
    logged = _logged(folder, out["prediction_id"])
    assert [r["path"] for r in logged] == ["v2"] * 4
    assert [r["output"] for r in logged] == expected
    only = {**body, "outputs": [{"name": "score"}]}
    answer = httpx.post(f"{base}/v2/models/risk/infer", json=only, headers=_bearer(keys["risk"]))
    assert [o["name"] for o in answer.json()["outputs"]] == ["score"]


def _logged(folder, ids: list[str]) -> list[dict]:
    wanted, found = set(ids), {}
    deadline = time.monotonic() + 10  # the server's logger flushes every 50 ms
    while time.monotonic() < deadline and len(found) < len(wanted):
        with Project(folder) as p:
            for record in p.log.read("predictions", 0, 100_000):
                doc = orjson.loads(record.payload)
                if doc["prediction_id"] in wanted:
                    found[doc["prediction_id"]] = doc
        time.sleep(0.1)
    return [found[i] for i in ids]


def test_preload_loads_every_services_models_before_any_call(server):
    folder, base, _, _ = server

    def variants() -> list[dict]:
        services = httpx.get(f"{base}/readyz").json()["services"]
        return [v for s in services.values() for v in s["variants"].values()]

    deadline = time.monotonic() + 30
    while any(v["status"] != "loaded" for v in variants()):
        assert time.monotonic() < deadline, variants()
        time.sleep(0.05)
    found = variants()
    assert {(v["model"], v["alias"], v["version"]) for v in found} == {
        ("churn", "champion", 1), ("churn", "challenger", 2)
    }  # fmt: skip
    assert all(0 < v["seconds"] < 30 for v in found)  # how long each load took
    announced = (folder / "server.log").read_text()
    assert "models loading in the background (/readyz)" in announced


def test_a_version_in_the_path_is_answered_by_the_variant_serving_it(server):
    _, base, _, keys = server
    body = {"inputs": [{"name": "user_id", "shape": [4], "datatype": "BYTES", "data": USERS}]}
    url = f"{base}/v2/models/risk_ab/versions/2/infer"
    answer = httpx.post(url, json=body, headers=_bearer(keys["risk"]))
    assert answer.status_code == 200, answer.text
    out = _outputs(answer.json())
    assert out["variant"] == ["b"] * 4 and out["model_version"] == [2] * 4
    meta = httpx.get(f"{base}/v2/models/risk_ab", headers=_bearer(keys["risk"])).json()
    assert meta["versions"] == ["1", "2"] and meta["platform"] == "headwater"
    assert meta["inputs"] == [{"name": "user_id", "datatype": "BYTES", "shape": [-1]}]
    ready = httpx.get(f"{base}/v2/models/risk_ab/versions/2/ready", headers=_bearer(keys["risk"]))
    assert ready.json() == {"name": "risk_ab", "ready": True}
    assert httpx.get(f"{base}/v2/health/live").json() == {"live": True}  # public, as /healthz
    assert httpx.get(f"{base}/v2/health/ready").status_code == 200
    assert httpx.get(f"{base}/v2", headers=_bearer(keys["risk"])).json()["name"] == "headwater"


@pytest.mark.parametrize(
    ("path", "body", "status", "reason"),
    [
        ("risk", {"inputs": []}, 400, "no inputs"),
        ("risk", {"inputs": [{"name": "user_id", "shape": [1], "datatype": "FP32", "data": [1]}]},
         400, "must be BYTES"),
        ("risk", {"inputs": [{"name": "user_id", "shape": [2], "datatype": "BYTES",
                              "data": ["u1"]}]}, 400, "shape [2] holds 2 values, data has 1"),
        ("risk", {"inputs": [{"name": "user_id", "shape": [1, 2], "datatype": "BYTES",
                              "data": ["u1", "u2"]}]}, 400, "is not [n] or [n, 1]"),
        ("risk", {"inputs": [{"name": "email", "shape": [1], "datatype": "BYTES",
                              "data": ["x"]}]}, 400, "unknown input 'email'"),
        ("risk", {"inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES",
                              "data": [7]}]}, 400, "BYTES values must be strings"),
        ("risk", {"inputs": [{"name": "user_id", "shape": [51], "datatype": "BYTES",
                              "data": ["u"] * 51}]}, 400, "the limit is 50"),
        ("risk", {"inputs": [{"name": "user_id", "shape": "4", "datatype": "BYTES",
                              "data": []}]}, 400, "must be a list of integers"),
        ("risk", {"inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES",
                              "data": ["u1"]}], "outputs": [{"name": "x"}]}, 400, "unknown output"),
        ("nope", {"inputs": []}, 404, "unknown service 'nope'"),
        ("risk/versions/9", {"inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES",
                                          "data": ["u1"]}]}, 404, "does not serve version '9'"),
    ],
)  # fmt: skip
def test_bad_v2_requests_get_a_4xx_with_the_reason(server, path, body, status, reason):
    _, base, _, keys = server
    answer = httpx.post(f"{base}/v2/models/{path}/infer", json=body, headers=_bearer(keys["admin"]))
    assert answer.status_code == status and reason in answer.json()["error"], answer.text


def test_v2_inference_needs_the_services_predict_scope(server):
    _, base, _, keys = server
    body = {"inputs": [{"name": "user_id", "shape": [1], "datatype": "BYTES", "data": ["u1"]}]}
    url = f"{base}/v2/models/risk/infer"
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers=_bearer(keys["none"])).status_code == 403
    garbage = httpx.post(
        url, content=b"{", headers={**_bearer(keys["risk"]), "content-type": "application/json"}
    )
    assert garbage.status_code == 400 and "not valid JSON" in garbage.json()["error"]


def _infer_request(service: str, users: list[str], raw: bool = False, version: str = ""):
    tensor = inference_pb2.ModelInferRequest.InferInputTensor(
        name="user_id", datatype="BYTES", shape=[len(users)]
    )
    request = inference_pb2.ModelInferRequest(model_name=service, model_version=version, id="g1")
    if raw:
        blob = b"".join(struct.pack("<I", len(u.encode())) + u.encode() for u in users)
        request.raw_input_contents.append(blob)
    else:
        tensor.contents.bytes_contents.extend(u.encode() for u in users)
    request.inputs.append(tensor)
    return request


def test_a_real_grpc_client_gets_the_same_scores_and_metadata(server):
    _, base, channel, keys = server
    expected = [p["score"] for p in _v1(base, keys["risk"])]
    stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
    auth = (("authorization", f"Bearer {keys['risk']}"),)
    assert stub.ServerLive(inference_pb2.ServerLiveRequest()).live
    assert stub.ServerReady(inference_pb2.ServerReadyRequest()).ready
    assert stub.ServerMetadata(inference_pb2.ServerMetadataRequest(), metadata=auth).name == (
        "headwater"
    )
    ready = stub.ModelReady(inference_pb2.ModelReadyRequest(name="risk"), metadata=auth)
    assert ready.ready
    meta = stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name="risk"), metadata=auth)
    assert [i.name for i in meta.inputs] == ["user_id"] and list(meta.versions) == ["1"]
    for raw in (False, True):
        answer = stub.ModelInfer(_infer_request("risk", USERS, raw), metadata=auth)
        out = {o.name: o for o in answer.outputs}
        assert list(out["score"].contents.fp64_contents) == expected
        assert list(out["unknown_entity"].contents.bool_contents) == [False] * 3 + [True]
        assert (answer.model_name, answer.model_version, answer.id) == ("risk", "1", "g1")
    pinned = stub.ModelInfer(_infer_request("risk_ab", USERS, version="2"), metadata=auth)
    assert (
        list({o.name: o for o in pinned.outputs}["model_version"].contents.int64_contents)
        == [2] * 4
    )
    predictions = headwater_pb2_grpc.PredictionsStub(channel).Predict(
        headwater_pb2.PredictRequest(
            service="risk", entities=[headwater_pb2.Entity(keys={"user_id": u}) for u in USERS]
        ),
        metadata=auth,
    )
    assert [p.score for p in predictions.predictions] == expected
    assert [p.entity["user_id"] for p in predictions.predictions] == USERS
    check = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
    )
    assert check.status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_refusals_are_the_matching_status_codes(server):
    _, _, channel, keys = server
    stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
    auth = (("authorization", f"Bearer {keys['risk']}"),)
    wrong_type = _infer_request("risk", ["u1"])
    wrong_type.inputs[0].datatype = "FP32"
    cut = _infer_request("risk", ["u1"], raw=True)
    cut.raw_input_contents[0] = b"\x09\x00\x00\x00u1"
    not_utf8 = _infer_request("risk", ["u1"])
    not_utf8.inputs[0].contents.bytes_contents[0] = b"\xff\xfe"
    cases = [
        (wrong_type, auth, grpc.StatusCode.INVALID_ARGUMENT, "must be BYTES"),
        (cut, auth, grpc.StatusCode.INVALID_ARGUMENT, "is cut"),
        (not_utf8, auth, grpc.StatusCode.INVALID_ARGUMENT, "not UTF-8"),
        (_infer_request("risk", ["u1"] * 51), auth, grpc.StatusCode.INVALID_ARGUMENT, "limit"),
        (_infer_request("risk", ["u1"], version="7"), auth, grpc.StatusCode.NOT_FOUND, "'7'"),
        (_infer_request("risk_shadow", ["u1"]), auth, grpc.StatusCode.PERMISSION_DENIED,
         "lacks the scope predict:risk_shadow"),
        (_infer_request("risk", ["u1"]), (), grpc.StatusCode.UNAUTHENTICATED, "API key"),
        (_infer_request("risk", ["u1"]), (("authorization", "Bearer hw_bad"),),
         grpc.StatusCode.UNAUTHENTICATED, "malformed"),
    ]  # fmt: skip
    for request, metadata, code, reason in cases:
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, metadata=metadata)
        assert caught.value.code() == code and reason in caught.value.details(), (
            code,
            caught.value.details(),
        )
    admin = (("authorization", f"Bearer {keys['admin']}"),)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(_infer_request("nope", ["u1"]), metadata=admin)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name="risk"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
