"""The HTTP API over a real project: ingest, bad input, features, health, OpenAPI."""

from __future__ import annotations

import time

import orjson
import pytest
from fastapi.testclient import TestClient

from headwater import Project
from headwater.log.base import DEAD_LETTER_STREAM

LOCAL = "http://localhost"  # the server answers loopback Host names only


@pytest.fixture
def client(small_project):
    project = Project(small_project)
    with TestClient(project.app(), base_url=LOCAL) as c:
        c.project = project  # type: ignore[attr-defined]
        yield c
    project.close()


def _order(i: int, **over):
    return {
        "event_id": f"o{i}",
        "user_id": f"u{i % 3}",
        "amount": 10.0 + i,
        "status": "paid",
        "ts": time.time() - 60,
        **over,
    }


def test_valid_events_are_acknowledged_with_offsets(client):
    r = client.post("/v1/events/orders", json=[_order(i) for i in range(5)])
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 5, "duplicates": 0, "rejected": [], "offsets": [0, 1, 2, 3, 4]}
    assert client.project.log.end_offset("orders") == 5


def test_duplicate_event_ids_are_appended_once(client):
    events = [_order(1), _order(2)]
    first = client.post("/v1/events/orders", json=events).json()
    again = client.post("/v1/events/orders", json=events + [_order(3)]).json()
    assert again["duplicates"] == 2 and again["accepted"] == 1
    assert again["offsets"][:2] == first["offsets"]
    assert client.project.log.end_offset("orders") == 3


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"amount": "ten"}, "field 'amount': expected float"),
        ({"user_id": 42}, "field 'user_id': expected string"),
        ({"user_id": None}, "missing required field 'user_id'"),
        ({"ts": None}, "missing required field 'ts'"),
        ({"ts": "yesterday-ish"}, "cannot parse 'yesterday-ish' as a timestamp"),
        ({"amout": 3.0}, "unknown field 'amout' in stream 'orders'; did you mean 'amount'?"),
        ({"ts": time.time() + 86400}, "is in the future"),
        ({"ts": 1e12}, "µs after 1970-01-01 is in the future"),  # past year 9999: no crash
        ({"event_id": 7}, "'event_id' must be a non-empty string"),
        ({"ts": -9000000000000}, "is before 1970-01-01"),
        ({"ts": -1}, "is before 1970-01-01"),
        ({"user_id": "u\x00"}, "key field 'user_id' contains a control character"),
        ({"user_id": "u\n1"}, "key field 'user_id' contains a control character"),
        ({"user_id": "u\x85"}, "key field 'user_id' contains a control character"),
        ({"event_id": "e\x1b[31m"}, "'event_id' contains a control character"),
        ({"user_id": {"a": [1] * 3}}, "field 'user_id': expected string"),
    ],
)
def test_each_bad_event_gets_its_reason_and_valid_ones_are_kept(client, bad, reason):
    events = [_order(1), _order(2, **bad), _order(3)]
    r = client.post("/v1/events/orders", json=events)
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 2
    assert [x["index"] for x in body["rejected"]] == [1]
    assert reason in body["rejected"][0]["reason"]
    assert body["offsets"] == [0, None, 1]
    dead = client.project.log.read(DEAD_LETTER_STREAM, 0, 10)
    assert len(dead) == 1
    letter = orjson.loads(dead[0].payload)
    assert letter["stream"] == "orders" and reason in letter["reason"]
    assert letter["event"] == events[1]


def test_a_batch_of_only_bad_events_is_422_and_dead_lettered(client):
    r = client.post("/v1/events/orders", json=[{"nope": 1}, "text"])
    assert r.status_code == 422
    assert len(r.json()["detail"]["rejected"]) == 2
    assert client.project.log.end_offset(DEAD_LETTER_STREAM) == 2


def test_unknown_stream_is_404_with_a_suggestion(client):
    r = client.post("/v1/events/order", json=[_order(1)])
    assert r.status_code == 404
    assert "did you mean 'orders'" in r.json()["detail"]


def test_non_json_body_is_400(client):
    r = client.post(
        "/v1/events/orders", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["detail"]


def test_a_json_scalar_is_422(client):
    assert client.post("/v1/events/orders", json=12).status_code == 422


def test_oversized_body_is_413_by_declared_length(client):
    big = [_order(i, status="x" * 1000) for i in range(400)]
    r = client.post("/v1/events/orders", json=big)
    assert r.status_code == 413
    assert "exceeds the limit of 200000 bytes" in r.json()["detail"]
    assert client.project.log.end_offset("orders") == 0


def test_oversized_body_is_413_when_streamed_without_length(client):
    def chunks():
        yield b"["
        for i in range(400):
            yield orjson.dumps(_order(i, status="x" * 1000)) + b","
        yield b"{}]"

    r = client.post(
        "/v1/events/orders", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


def test_unknown_fields_are_kept_when_the_stream_says_so(client):
    r = client.post("/v1/events/clicks", json=[{"user_id": "u1", "ts": time.time(), "x": [1]}])
    assert r.json()["accepted"] == 1
    payload = orjson.loads(client.project.log.read("clicks", 0, 1)[0].payload)
    assert payload["x"] == [1]


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("depth", [33, 253, 300])
def test_deeply_nested_fields_are_dead_lettered_and_the_valid_events_kept(client, depth):
    good = {"user_id": "u1", "ts": time.time()}
    events = [good, {**good, "x": _nested(depth), "user_id": "u2"}, {**good, "user_id": "u3"}]
    r = client.post("/v1/events/clicks", json=events)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 2 and [x["index"] for x in body["rejected"]] == [1]
    assert "nested more than 32 levels" in body["rejected"][0]["reason"]
    letter = orjson.loads(client.project.log.read(DEAD_LETTER_STREAM, 0, 10)[0].payload)
    assert "nested more than 32" in letter["reason"]
    # the event is kept whole when JSON can hold it, as the start of its text otherwise
    assert letter["event"] == events[1] or letter["event_text"].startswith("{'user_id'")


def test_a_string_field_given_deep_nesting_is_dead_lettered_without_a_500(client):
    events = [_order(1), _order(2, status=_nested(260)), _order(3)]
    r = client.post("/v1/events/orders", json=events)
    assert r.status_code == 200 and r.json()["accepted"] == 2
    letter = orjson.loads(client.project.log.read(DEAD_LETTER_STREAM, 0, 10)[0].payload)
    assert "field 'status'" in letter["reason"] and letter["event_text"]


def test_features_after_processing(client):
    client.post("/v1/events/orders", json=[_order(0), _order(3), _order(6, status="refunded")])
    client.project.process()
    r = client.post(
        "/v1/features",
        json={
            "entities": [{"user_id": "u0"}, {"user_id": "zz"}],
            "features": ["spend_1h", "spend_lifetime"],
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["results"] == [
        {"spend_1h": 23.0, "spend_lifetime": 23.0},
        {"spend_1h": 0.0, "spend_lifetime": 0.0},
    ]
    g = client.get("/v1/features", params={"user_id": "u0", "features": "spend_7d,clicks_1d"})
    assert g.json()["results"] == [{"spend_7d": 23.0, "clicks_1d": 0}]


def test_feature_errors(client):
    r = client.post("/v1/features", json={"entities": [{"user_id": "u0"}], "features": ["spend_1"]})
    assert r.status_code == 404 and "did you mean" in r.json()["detail"]
    r = client.post("/v1/features", json={"entities": [{"uid": "u0"}], "features": ["spend_1h"]})
    assert r.status_code == 422 and "no entity key 'user_id'" in r.json()["detail"]
    assert client.post("/v1/features", json={"features": ["spend_1h"]}).status_code == 422


def test_health_readiness_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    paths = client.get("/openapi.json").json()["paths"]
    # one ingest operation per stream, its body generated from the stream (issue 18)
    assert {"/v1/events/orders", "/v1/events/clicks", "/v1/features", "/healthz", "/readyz"} <= set(
        paths
    )
    body = paths["/v1/events/orders"]["post"]["requestBody"]["content"]["application/json"]
    event = body["schema"]["anyOf"][2]
    assert event["properties"]["amount"] == {"type": "number"}  # required: never null
    assert event["properties"]["status"]["anyOf"][1] == {"type": "null"}
    assert event["required"] == ["amount", "ts", "user_id"]
    assert event["additionalProperties"] is False
    clicks = paths["/v1/events/clicks"]["post"]["requestBody"]["content"]["application/json"]
    assert clicks["schema"]["anyOf"][2]["additionalProperties"] is True  # unknown_fields="keep"
    assert "422" in paths["/v1/events/orders"]["post"]["responses"]


def test_docs_are_served_without_a_cdn(client):
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = client.get(page).text
        assert f"/assets/docs/{asset}" in html
        assert "cdn" not in html.lower() and "https://" not in html
        assert client.get(f"/assets/docs/{asset}").status_code == 200
