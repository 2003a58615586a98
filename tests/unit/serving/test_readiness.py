"""Readiness per service: /readyz reports every service and waits for the required ones only;
preloaded models answer 503 with the reason until loaded; probes never load a model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from headwater import Project
from headwater.serving import scoring
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

LOCAL = "http://localhost"

SERVICES = (
    DEFINITIONS
    + """
from headwater import Service, Variant

churn_model, device_model = models[0], models[3]
services = [
    Service("risk", model=churn_model, required=True, owner="growth", description="Churn"),
    Service("risk_ab", variants=[Variant("a", churn_model), Variant("b", churn_model,
                                                                    alias="challenger")],
            routing="ab", owner="growth", description="A/B, the challenger untrained"),
    Service("devices", model=device_model, owner="web", description="Another team's"),
]
"""
)


def _wait_for(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def project(project_factory):
    with Project(project_factory(SERVICES), clock=lambda: NOW) as p:
        p.ingest("visits", visits(users=60, days=20))
        p.process()
        p.serving.scorers._refresh = 0.05  # the refresher's pass, a second in production
        yield p


def test_readyz_waits_for_required_services_and_reports_each_one(project):
    p = project
    with TestClient(p.app(), base_url=LOCAL) as client:
        # the first probe starts loading the required service's model, which has no version
        _wait_for(lambda: "loading" not in client.get("/readyz").json()["reason"])
        answer = client.get("/readyz")
        body = answer.json()
        assert answer.status_code == 503
        assert body["required"] == ["risk"]
        assert body["reason"].startswith("required service 'risk' is not ready")
        assert "has no 'champion' version" in body["reason"]
        assert set(body["services"]) == {"risk", "risk_ab", "devices"}
        devices = body["services"]["devices"]
        assert devices["ready"] is False and devices["owner"] == "web"
        assert devices["variants"]["champion"]["status"] == "missing"
        assert client.get("/v2/health/ready").status_code == 503

        # the required model is trained and promoted: the server becomes ready by itself
        # (the refresher retries preloaded aliases), without a restart
        p.promote("churn", p.train("churn").version)
        _wait_for(lambda: client.get("/readyz").status_code == 200)
        body = client.get("/readyz").json()
        risk = body["services"]["risk"]
        assert risk["ready"] and risk["variants"]["champion"]["status"] == "loaded"
        assert risk["variants"]["champion"]["version"] == 1
        # another team's untrained model, and a variant without its version, stay theirs
        assert body["services"]["devices"]["ready"] is False
        ab = body["services"]["risk_ab"]
        assert ab["ready"] is False and ab["variants"]["a"]["status"] == "loaded"  # as risk's
        assert ab["variants"]["b"]["status"] == "missing"
        assert ab["reason"].startswith("variant 'b': model 'churn' has no 'challenger'")
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get("/v2/models/risk/ready").status_code == 200
        assert client.get("/v2/models/risk_ab/ready").status_code == 503
        assert client.get("/v2/models/risk/versions/1/ready").status_code == 200
        assert client.get("/v2/models/risk/versions/2/ready").status_code == 503
        predicted = client.post("/v1/predict/risk", json={"entity": {"user_id": "u1"}})
        assert predicted.status_code == 200
        refused = client.post("/v1/predict/devices", json={"entity": {"user_id": "u1"}})
        assert refused.status_code == 503 and "has no 'champion'" in refused.json()["detail"]


def test_probes_never_load_a_model(project, monkeypatch):
    p = project
    p.promote("churn", p.train("churn").version)
    p.promote("churn", 1, alias="challenger")
    loads: list[tuple[str, str]] = []
    real = scoring.load_scorer

    def counted(registry, model, alias):  # type: ignore[no-untyped-def]
        loads.append((model, alias))
        return real(registry, model, alias)

    monkeypatch.setattr(scoring, "load_scorer", counted)
    with TestClient(p.app(), base_url=LOCAL) as client:
        _wait_for(lambda: client.get("/readyz").status_code == 200)
        assert loads == [("churn", "champion")]  # the required service's, in the background
        for _ in range(5):
            body = client.get("/readyz").json()
            assert client.get("/v2/models/risk_ab/ready").status_code == 200
            assert client.get("/v2/models/risk_ab").json()["versions"] == ["1"]
        assert loads == [("churn", "champion")]
        ab = body["services"]["risk_ab"]
        assert ab["ready"] and ab["variants"]["b"] == {
            "model": "churn", "alias": "challenger", "status": "registered", "version": 1
        }  # fmt: skip
        # the first call loads what it needs, and readiness says so
        for user in range(12):
            client.post("/v1/predict/risk_ab", json={"entity": {"user_id": f"u{user}"}})
        assert sorted(loads) == [("churn", "challenger"), ("churn", "champion")]
        body = client.get("/readyz").json()
        assert body["services"]["risk_ab"]["variants"]["b"]["status"] == "loaded"


def test_a_preloaded_service_answers_503_with_the_reason_until_its_model_loads(
    project, monkeypatch
):
    p = project
    p.promote("churn", p.train("churn").version)
    release = threading.Event()
    real = scoring.load_scorer

    def slow(registry, model, alias):  # type: ignore[no-untyped-def]
        if model == "churn_device":
            raise RuntimeError("the artifact is unreadable")
        release.wait(30)
        return real(registry, model, alias)

    monkeypatch.setattr(scoring, "load_scorer", slow)
    serving = p.serving
    assert serving.preload() == ["risk", "risk_ab", "devices"]
    with TestClient(p.app(), base_url=LOCAL) as client:
        answer = client.post("/v1/predict/risk", json={"entity": {"user_id": "u1"}})
        assert answer.status_code == 503
        assert answer.json()["error"] == "ModelLoading"
        assert "model 'churn' alias 'champion' is loading" in answer.json()["detail"]
        body = client.get("/readyz").json()
        assert body["status"] == "unavailable"
        assert body["services"]["risk"]["variants"]["champion"]["status"] == "loading"
        assert body["services"]["risk"]["reason"] == "variant 'champion': model 'churn' is loading"
        release.set()
        _wait_for(lambda: client.get("/readyz").status_code == 200)
        answer = client.post("/v1/predict/risk", json={"entity": {"user_id": "u1"}})
        assert answer.status_code == 200
        failed = client.get("/readyz").json()["services"]["devices"]
        assert failed["variants"]["champion"]["status"] == "failed"
        assert failed["reason"] == "variant 'champion': RuntimeError: the artifact is unreadable"


def test_the_grpc_health_of_the_server_follows_the_required_services(project):
    from grpc_health.v1 import health_pb2

    from headwater.serving.grpc.server import Calls, ServerHealth

    p = project
    checks = ServerHealth(Calls(lambda: p.serving, None, 10))

    def status(service: str) -> int:
        request = health_pb2.HealthCheckRequest(service=service)
        return checks.Check(request, None).status  # type: ignore[no-any-return]

    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    checks.set("inference.GRPCInferenceService", serving)
    assert status("") == not_serving  # the required service 'risk' has no model yet
    assert status("inference.GRPCInferenceService") == serving
    p.promote("churn", p.train("churn").version)
    _wait_for(lambda: status("") == serving)
