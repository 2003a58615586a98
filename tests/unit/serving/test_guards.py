"""The trust boundary of the HTTP API, over a real project with ``[server] auth = "keys"``:
every route refuses a missing, bad or revoked key (401) and a key without the scope (403),
the browser guards refuse foreign hosts, origins and content types, a key over its rate limit
gets 429, and every write is audited without its secret."""

from __future__ import annotations

import time
from datetime import timedelta

import orjson
import pytest
from fastapi.testclient import TestClient

from headwater import Project
from headwater.definitions.types import to_micros
from headwater.log.base import NewRecord
from headwater.monitoring.alerts import ALERTS
from tests.conftest import write_project
from tests.unit.serving.test_predict import SERVICES
from tests.unit.training.conftest import NOW, visits

LOCAL = "http://localhost"
SERVER = '\n[server]\nauth = "keys"\nrate_limit = 20\nrate_burst = 40\nmax_entities = 10\n'


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    folder = write_project(tmp_path_factory.mktemp("guarded") / "p", SERVICES)
    with open(folder / "headwater.toml", "a") as toml:
        toml.write(SERVER)
    with Project(folder, clock=lambda: NOW) as p:
        p.ingest("visits", visits(users=60))
        p.process()
        p.promote("churn", p.train("churn").version)
        keys = {
            name: p.create_key(team, scopes)[1]
            for name, team, scopes in [
                ("admin", "ops", ["admin"]),
                ("web", "web", ["web:*"]),
                ("growth", "growth", ["growth:*"]),
                ("ingest_checkouts", "web", ["ingest:checkouts"]),
                ("predict_risk", "growth", ["predict:risk"]),
                ("device_only", "growth", ["features:read:device"]),
                ("feedback", "growth", ["feedback:visits"]),
                ("acks", "ops", ["alerts:ack"]),
            ]
        }
        with TestClient(p.app(), base_url=LOCAL) as client:
            yield p, client, keys


def _auth(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


EVENT = {"user_id": "u1", "ts": (NOW - timedelta(minutes=1)).isoformat()}
VISIT = {**EVENT, "device": "ios"}
PREDICT = {"entity": {"user_id": "u1"}}
FEATURES = {"entities": [{"user_id": "u1"}], "features": ["visits_7d"]}
DEVICE = {"entities": [{"user_id": "u1"}], "features": ["device_lifetime"]}

# (key, method, path, body, expected status)
CASES = [
    (None, "POST", "/v1/events/checkouts", [EVENT], 401),
    (None, "POST", "/v1/predict/risk", PREDICT, 401),
    (None, "POST", "/v1/features", FEATURES, 401),
    (None, "GET", "/v1/features?user_id=u1&features=visits_7d", None, 401),
    (None, "GET", "/v1/models", None, 401),
    (None, "GET", "/metrics", None, 401),
    (None, "GET", "/no/such/route", None, 401),
    (None, "GET", "/healthz", None, 200),
    (None, "GET", "/openapi.json", None, 200),
    (None, "GET", "/docs", None, 200),
    ("ingest_checkouts", "POST", "/v1/events/checkouts", [EVENT], 200),
    ("ingest_checkouts", "POST", "/v1/events/visits", [VISIT], 403),
    ("ingest_checkouts", "POST", "/v1/predict/risk", PREDICT, 403),
    ("web", "POST", "/v1/events/visits", [VISIT], 200),
    ("web", "POST", "/v1/predict/risk", PREDICT, 403),
    ("web", "POST", "/v1/features", FEATURES, 403),
    ("growth", "POST", "/v1/predict/risk", PREDICT, 200),
    ("growth", "POST", "/v1/features", FEATURES, 200),
    ("growth", "GET", "/v1/features?user_id=u1&features=visits_7d", None, 200),
    ("growth", "POST", "/v1/events/checkouts", [EVENT], 403),
    ("predict_risk", "POST", "/v1/predict/risk", PREDICT, 200),
    ("predict_risk", "POST", "/v1/predict/risk_ab", PREDICT, 403),
    ("predict_risk", "POST", "/v1/features", FEATURES, 403),
    ("device_only", "POST", "/v1/features", DEVICE, 200),
    ("device_only", "POST", "/v1/features", FEATURES, 403),
    ("device_only", "GET", "/v1/features?user_id=u1&features=visits_7d", None, 403),
    ("feedback", "POST", "/v1/events/visits", [VISIT], 200),
    ("feedback", "POST", "/v1/events/checkouts", [EVENT], 403),
    ("predict_risk", "GET", "/v1/models", None, 200),
    ("predict_risk", "GET", "/metrics", None, 200),
    ("admin", "POST", "/v1/predict/risk_ab", PREDICT, 200),
    ("admin", "POST", "/v1/predict/nope", PREDICT, 404),
    ("admin", "POST", "/v1/predict/risk", {"entities": [{"user_id": "u1"}] * 11}, 413),
    ("admin", "POST", "/v1/features", {**FEATURES, "entities": [{"user_id": "u"}] * 11}, 413),
]


@pytest.mark.parametrize(("key", "method", "path", "body", "status"), CASES)
def test_every_route_needs_the_right_scope(guarded, key, method, path, body, status):
    _, client, keys = guarded
    headers = _auth(keys[key]) if key else {}
    r = client.request(method, path, json=body, headers=headers)
    assert r.status_code == status, r.text
    if status in (401, 403):
        assert r.json()["error"] in ("Unauthenticated", "Forbidden") and r.json()["detail"]
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_refused_ingest_stores_nothing(guarded):
    p, client, keys = guarded
    before = p.log.end_offset("checkouts")
    for headers in ({}, _auth(keys["growth"]), _auth("hw_0123456789abcdef_" + "x" * 43)):
        assert client.post("/v1/events/checkouts", json=[EVENT], headers=headers).status_code in (
            401,
            403,
        )
    assert p.log.end_offset("checkouts") == before


def test_the_api_key_header_works_too_and_bad_tokens_say_why(guarded):
    _, client, keys = guarded
    ok = client.post("/v1/predict/risk", json=PREDICT, headers={"x-api-key": keys["growth"]})
    assert ok.status_code == 200
    bad = client.post("/v1/predict/risk", json=PREDICT, headers=_auth("letmein"))
    assert bad.status_code == 401 and "malformed" in bad.json()["detail"]
    basic = client.post("/v1/predict/risk", json=PREDICT, headers={"authorization": "Basic eA=="})
    assert basic.status_code == 401


def test_a_revoked_key_is_refused_at_once_by_this_server(guarded):
    p, client, _ = guarded
    key, secret = p.create_key("growth", ["predict:risk"])
    assert client.post("/v1/predict/risk", json=PREDICT, headers=_auth(secret)).status_code == 200
    p.revoke_key(key.id)
    r = client.post("/v1/predict/risk", json=PREDICT, headers=_auth(secret))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({"host": "evil.example"}, 400, "HostNotAllowed"),
        ({"host": "evil.example:8800"}, 400, "HostNotAllowed"),
        ({"host": "127.0.0.1:8800"}, 200, None),
        ({"host": "[::1]:8800"}, 200, None),
        ({"origin": "http://evil.example"}, 403, "OriginNotAllowed"),
        ({"origin": "http://localhost:3000"}, 403, "OriginNotAllowed"),
        ({"origin": "null"}, 403, "OriginNotAllowed"),
        ({"origin": "http://localhost"}, 200, None),  # the server's own pages
        ({"content-type": "text/plain"}, 415, "UnsupportedMediaType"),
        ({"content-type": "application/x-www-form-urlencoded"}, 415, "UnsupportedMediaType"),
        ({"content-type": "application/json; charset=utf-8"}, 200, None),
    ],
)
def test_browser_guards(guarded, headers, status, error):
    p, client, keys = guarded
    before = p.log.end_offset("checkouts")
    r = client.post(
        "/v1/events/checkouts",
        content=orjson.dumps([EVENT]),
        headers={"content-type": "application/json", **_auth(keys["web"]), **headers},
    )
    assert r.status_code == status, r.text
    assert p.log.end_offset("checkouts") == before + (1 if status == 200 else 0)
    if error:
        assert r.json()["error"] == error


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(guarded):
    p, client, _ = guarded
    _, secret = p.create_key("growth", ["predict:risk"])
    started = time.monotonic()
    statuses: list[int] = []
    while 429 not in statuses and len(statuses) < 400:
        limited = client.post("/v1/predict/risk", json=PREDICT, headers=_auth(secret))
        statuses.append(limited.status_code)
    elapsed = time.monotonic() - started
    served = statuses.index(429)  # a 429 came
    # the burst of 40, plus what 20/s refilled meanwhile (a slow machine refills more)
    assert set(statuses[:served]) == {200} and 40 <= served <= 40 + 20 * elapsed + 1
    assert int(limited.headers["retry-after"]) >= 1 and "rate limit" in limited.json()["detail"]
    # another key is not slowed down by it
    _, other = p.create_key("growth", ["predict:risk"])
    assert client.post("/v1/predict/risk", json=PREDICT, headers=_auth(other)).status_code == 200


def test_models_and_aliases_over_http(guarded):
    p, client, keys = guarded
    second = p.train("churn").version
    listed = client.get("/v1/models", headers=_auth(keys["web"])).json()["models"]
    churn = next(m for m in listed if m["name"] == "churn")
    assert churn["owner"] == "growth" and churn["aliases"]["champion"] == second - 1
    assert [v["version"] for v in churn["versions"]][-1] == second
    path = "/v1/models/churn/aliases/challenger"
    body = {"version": second, "reason": "looks better"}
    assert client.post(path, json=body, headers=_auth(keys["web"])).status_code == 403
    r = client.post(path, json=body, headers=_auth(keys["growth"]))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == second and "growth" in r.json()["by"]
    assert p.registry.alias("churn", "challenger") == second
    history = p.registry.aliases("churn")["challenger"]["history"]
    assert history[-1]["reason"] == "looks better" and "growth" in history[-1]["by"]
    back = client.post(
        path, json={"rollback": True, "reason": "undo"}, headers=_auth(keys["growth"])
    )
    assert back.status_code in (200, 404)  # 404 when challenger had no earlier version
    missing = client.post(
        "/v1/models/churn/aliases/x",
        json={"version": 99, "reason": "r"},
        headers=_auth(keys["admin"]),
    )
    assert missing.status_code == 404
    no_reason = client.post(path, json={"version": second}, headers=_auth(keys["admin"]))
    assert no_reason.status_code == 422
    strict = client.post(
        "/v1/models/churn_strict/aliases/champion",
        json={"version": 1, "reason": "r"},
        headers=_auth(keys["admin"]),
    )
    assert strict.status_code in (404, 409)


def test_alerts_are_acknowledged_with_the_keys_team(guarded):
    p, client, keys = guarded
    at = to_micros(NOW)
    p.log.append(ALERTS, [NewRecord("alert0001", at, orjson.dumps({"kind": "drift"}))], at)
    path = "/v1/alerts/alert0001/ack"
    assert client.post(path, json={}, headers=_auth(keys["web"])).status_code == 403
    r = client.post(path, json={"reason": "known"}, headers=_auth(keys["acks"]))
    assert r.status_code == 200, r.text
    assert r.json()["ack"]["team"] == "ops" and r.json()["ack"]["reason"] == "known"
    assert [a.ack["team"] for a in p.alerts.list() if a.id == "alert0001"] == ["ops"]
    assert p.alerts.list(open_only=True) == []
    unknown = client.post("/v1/alerts/nope/ack", json={}, headers=_auth(keys["acks"]))
    assert unknown.status_code == 404


def test_every_write_is_audited_without_the_secret(guarded):
    p, client, keys = guarded
    client.post("/v1/events/checkouts", json=[EVENT, {"bad": 1}], headers=_auth(keys["web"]))
    records = list(p.audit_log.read())
    ingest = [r for r in records if r.action == "ingest" and r.target == "checkouts"][-1]
    assert ingest.team == "web" and ingest.key_id == keys["web"].split("_")[1]
    assert ingest.counts == {"events": 2, "accepted": 1, "duplicates": 0, "rejected": 1}
    assert {"key.create", "ingest"} <= {r.action for r in records}
    raw = b"".join(r.payload for r in p.log.read("_audit", 0, 10**6))
    for secret in keys.values():
        assert secret.split("_", 2)[2].encode() not in raw
    assert list(p.audit_log.read(team="nobody")) == []


def test_a_non_loopback_address_without_auth_refuses_to_start(small_project):
    with Project(small_project) as p, pytest.raises(Exception, match="without authentication"):
        p.serve("0.0.0.0", 0)


def test_cors_answers_only_for_configured_origins(small_project):
    with open(small_project / "headwater.toml", "a") as toml:
        toml.write('\n[server]\nallowed_origins = ["https://app.example"]\n')
    with Project(small_project) as p, TestClient(p.app(), base_url=LOCAL) as client:
        preflight = {"access-control-request-method": "POST"}
        ok = client.options(
            "/v1/events/clicks", headers={"origin": "https://app.example", **preflight}
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        event = {"user_id": "u1", "ts": "2026-01-01T00:00:00Z"}
        posted = client.post(
            "/v1/events/clicks", json=[event], headers={"origin": "https://app.example"}
        )
        assert posted.status_code == 200
        assert posted.headers["access-control-allow-origin"] == "https://app.example"
        other = client.options(
            "/v1/events/clicks", headers={"origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers
        refused = client.post(
            "/v1/events/clicks", json=[event], headers={"origin": "https://evil.example"}
        )
        assert refused.status_code == 403 and p.log.end_offset("clicks") == 1


def test_without_cors_no_origin_gets_cors_headers(small_project):
    with Project(small_project) as p, TestClient(p.app(), base_url=LOCAL) as client:
        r = client.options(
            "/v1/events/clicks",
            headers={"origin": "https://app.example", "access-control-request-method": "POST"},
        )
        assert r.status_code in (403, 405) and "access-control-allow-origin" not in r.headers
