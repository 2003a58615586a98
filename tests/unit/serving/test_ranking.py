"""Ranking services: every candidate scored and logged, the k best returned in order."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from fastapi.testclient import TestClient

from headwater import Project
from headwater.definitions import DefinitionError
from tests.conftest import write_project

LOCAL = "http://localhost"  # the server answers loopback Host names only

NOW = datetime(2026, 3, 1, tzinfo=UTC)

DEFINITIONS = """
from headwater import Entity, Feature, Label, Model, Service, Stream, agg

user = Entity("user", keys="user_id", owner="growth", description="A user")
item = Entity("item", keys="item_id", owner="web", description="A product")
pair = Entity("user_item", keys=["user_id", "item_id"], owner="web", description="A pair")
clicks = Stream("clicks", fields={"user_id": "string", "item_id": "string", "ts": "timestamp"},
                key="user_id", time="ts", owner="web", description="Product clicks")
features = [
    Feature("user_clicks", entity=user, stream=clicks, aggregation=agg.count(),
            windows=["7d"], owner="web", description="Clicks by the user"),
    Feature("item_clicks", entity=item, stream=clicks, aggregation=agg.count(),
            windows=["7d"], owner="web", description="Clicks on the item"),
    Feature("pair_clicks", entity=pair, stream=clicks, aggregation=agg.count(),
            windows=["14d"], owner="web", description="The user's clicks on the item"),
]
clicked = Label("clicked_1d", entity=pair, stream=clicks, aggregation=agg.count(),
                horizon="1d", transform=lambda n: n > 0, owner="web",
                description="The user clicks the item in the next day")


def logistic():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=500)


models = [
    Model("affinity", label=clicked, features=["pair_clicks_14d", "item_clicks_7d",
          "user_clicks_7d"], estimator=logistic, lookback="10d", min_rows=50,
          owner="web", description="Who clicks what"),
]
services = [
    Service("recommend", model=models[0], candidates=item, k=3, max_candidates=50,
            owner="web", description="Products for a user, best first"),
    Service("pair_score", model=models[0], owner="web", description="One pair's score"),
]
"""

ITEMS = [f"i{n}" for n in range(12)]


def clicks(users: int = 40, days: int = 30, seed: int = 5) -> list[dict]:
    """Each user keeps coming back to three favourite items, and rarely clicks others."""
    rnd = random.Random(seed)
    start = NOW - timedelta(days=days)
    events = []
    for u in range(users):
        favourites = rnd.sample(ITEMS, 3)
        t = 0.0
        while (t := t + rnd.expovariate(2.0)) < days:
            item = rnd.choice(favourites) if rnd.random() < 0.85 else rnd.choice(ITEMS)
            events.append({"user_id": f"u{u}", "item_id": item, "ts": start + timedelta(days=t)})
    return events


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    folder = write_project(tmp_path_factory.mktemp("ranking") / "p", DEFINITIONS)
    with Project(folder, clock=lambda: NOW) as p:
        p.ingest("clicks", clicks())
        p.process()
        p.promote("affinity", p.train("affinity").version)
        yield p


def _logged(p: Project) -> list[dict]:
    p.serving.logger.flush()
    return [orjson.loads(r.payload) for r in p.log.read("predictions", 0, 10**7)]


def test_http_ranking_returns_the_k_best_and_logs_every_candidate(ranked):
    p = ranked
    before = len(_logged(p))
    with TestClient(p.app(), base_url=LOCAL) as client:
        r = client.post(
            "/v1/predict/recommend", json={"entity": {"user_id": "u3"}, "candidates": ITEMS}
        )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["scored"] == len(ITEMS)
    items = answer["items"]
    assert [i["rank"] for i in items] == [1, 2, 3]  # the service's k
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)

    logged = [x for x in _logged(p)[before:] if x.get("ranking_id") == answer["ranking_id"]]
    assert len(logged) == len(ITEMS)  # every candidate, not only the returned ones
    assert sorted(x["rank"] for x in logged) == list(range(1, len(ITEMS) + 1))
    assert sum(x["returned"] for x in logged) == 3
    by_item = {x["entity"]["item_id"]: x for x in logged}
    for item in items:
        record = by_item[item["item_id"]]
        assert record["prediction_id"] == item["prediction_id"]
        assert record["output"] == item["score"]
        assert record["rank"] == item["rank"] and record["returned"]
    worst = max(logged, key=lambda x: x["rank"])
    assert worst["output"] <= scores[-1] and not worst["returned"]
    # each logged candidate carries its pair's features and both keys, like any prediction
    assert set(logged[0]["features"]) == {"pair_clicks_14d", "item_clicks_7d", "user_clicks_7d"}
    assert logged[0]["user_id"] == "u3" and "item_id" in logged[0]


def test_a_ranking_scores_each_pair_as_a_plain_prediction_would(ranked):
    p = ranked
    answer = p.rank("recommend", {"user_id": "u7"}, ITEMS, k=len(ITEMS))
    for item in answer["items"]:
        single = p.predict("recommend", user_id="u7", item_id=item["item_id"])
        assert single["score"] == pytest.approx(item["score"], rel=1e-12)


def test_the_model_learned_the_favourites(ranked):
    """The pair feature carries the signal: a user's top 3 are mostly items they favour."""
    p = ranked
    events = clicks()
    hits = 0
    for u in range(10):
        counts: dict[str, int] = {}
        for e in events:
            if e["user_id"] == f"u{u}" and e["ts"] >= NOW - timedelta(days=14):
                counts[e["item_id"]] = counts.get(e["item_id"], 0) + 1
        most = set(sorted(counts, key=lambda i: -counts[i])[:3])
        top = {i["item_id"] for i in p.rank("recommend", {"user_id": f"u{u}"}, ITEMS)["items"]}
        hits += len(top & most)
    assert hits >= 24  # of 30


def test_candidates_as_objects_and_a_smaller_k(ranked):
    answer = ranked.rank("recommend", {"user_id": "u1"}, [{"item_id": i} for i in ITEMS[:5]], 2)
    assert answer["scored"] == 5 and len(answer["items"]) == 2
    assert {i["item_id"] for i in answer["items"]} <= set(ITEMS[:5])


def test_unknown_candidates_get_defaults_and_are_flagged(ranked):
    answer = ranked.rank("recommend", {"user_id": "u2"}, ["never-seen", *ITEMS[:2]], k=3)
    flags = {i["item_id"]: i["unknown_entity"] for i in answer["items"]}
    assert flags == {"never-seen": True, ITEMS[0]: False, ITEMS[1]: False}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"entity": {"user_id": "u1"}, "candidates": []}, "at least one candidate"),
        ({"entity": {"user_id": "u1"}, "candidates": "i1"}, "must be a list"),
        ({"entity": {}, "candidates": ["i1"]}, "user_id"),
        ({"entity": {"user_id": "u1"}, "candidates": ["i1"], "k": 0}, "positive"),
        ({"entity": {"user_id": "u1"}, "candidates": ["i1"], "k": "2"}, "positive"),
        ({"entity": {"user_id": "u1"}, "candidates": [{"sku": "i1"}]}, "item_id"),
        ({"entity": {"user_id": "u1"}, "candidates": [None]}, "item_id"),
        ({"entity": {"user_id": "u1"}, "candidates": ["i1"] * 51}, "max_candidates"),
    ],
)
def test_bad_ranking_requests_get_422_with_the_reason(ranked, body, reason):
    with TestClient(ranked.app(), base_url=LOCAL) as client:
        r = client.post("/v1/predict/recommend", json=body)
    assert r.status_code == 422, r.text
    assert reason in r.json()["detail"]


def test_ranking_needs_a_pair_model_and_a_ranking_service(ranked):
    from headwater import Service

    defs = ranked.definitions
    with pytest.raises(DefinitionError, match="must have keys besides"):
        Service(
            "bad",
            model=defs.models["affinity"],
            candidates=defs.entities["user_item"],
            owner="x",
            description="x",
        )
    with pytest.raises(DefinitionError, match="lacks 'sku'"):
        from headwater import Entity

        sku = Entity("sku", keys="sku", owner="x", description="x")
        Service("bad", model=defs.models["affinity"], candidates=sku, owner="x", description="x")
    with pytest.raises(DefinitionError, match="does not rank"):
        ranked.rank("pair_score", {"user_id": "u1"}, ["i1"])


def _v2(client: TestClient, body: dict, path: str = "/v2/models/recommend/infer") -> dict:
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    return {o["name"]: o for o in r.json()["outputs"]}


def test_the_v2_protocol_ranks_as_v1_predict_does_and_logs_every_candidate(ranked):
    """KServe's v2 request for a ranking service: the request entity's keys (shape [1]) and
    the candidates' keys (shape [n]); the answer is the k best, best first, as tensors."""
    p = ranked
    expected = p.rank("recommend", {"user_id": "u5"}, ITEMS, k=4)["items"]
    body = {
        "inputs": [
            {"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["u5"]},
            {"name": "item_id", "datatype": "BYTES", "shape": [len(ITEMS), 1], "data": ITEMS},
        ],
        "parameters": {"k": 4},
    }
    with TestClient(p.app(), base_url=LOCAL) as client:
        before = len(_logged(p))
        out = _v2(client, body)
        meta = client.get("/v2/models/recommend").json()
        version = str(out["model_version"]["data"][0])
        pinned = _v2(client, body, f"/v2/models/recommend/versions/{version}/infer")
        default_k = _v2(client, {"inputs": body["inputs"]})
        only = _v2(client, {**body, "outputs": [{"name": "item_id"}, {"name": "rank"}]})
    assert out["item_id"]["data"] == [i["item_id"] for i in expected]
    assert out["rank"]["data"] == [1, 2, 3, 4]
    assert out["score"]["data"] == [i["score"] for i in expected]
    assert out["score"]["datatype"] == "FP64" and out["rank"]["datatype"] == "INT64"
    assert out["ranking_id"]["shape"] == [1]
    logged = [x for x in _logged(p)[before:] if x.get("ranking_id") == out["ranking_id"]["data"][0]]
    assert len(logged) == len(ITEMS) and {x["path"] for x in logged} == {"v2"}
    assert {x["prediction_id"] for x in logged if x["returned"]} == set(
        out["prediction_id"]["data"]
    )
    assert pinned["item_id"]["data"] == out["item_id"]["data"]
    assert len(default_k["rank"]["data"]) == 3  # the service's k
    assert set(only) == {"item_id", "rank"}
    assert [i["name"] for i in meta["inputs"]] == ["user_id", "item_id"]
    assert meta["inputs"][0]["shape"] == [1] and meta["inputs"][1]["shape"] == [-1]
    assert "rank" in [o["name"] for o in meta["outputs"]]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            {
                "inputs": [
                    {"name": "user_id", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
                    {"name": "item_id", "datatype": "BYTES", "shape": [1], "data": ["i1"]},
                ]
            },
            "one entity",
        ),
        (
            {"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["u1"]}]},
            "missing input 'item_id'",
        ),
        (
            {"inputs": [{"name": "item_id", "datatype": "BYTES", "shape": [1], "data": ["i1"]}]},
            "missing input 'user_id'",
        ),
        (
            {
                "inputs": [
                    {"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["u1"]},
                    {"name": "item_id", "datatype": "BYTES", "shape": [1], "data": ["i1"]},
                ],
                "parameters": {"k": 0},
            },
            "k must be a positive",
        ),
        (
            {
                "inputs": [
                    {"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["u1"]},
                    {"name": "item_id", "datatype": "BYTES", "shape": [1], "data": ["i1"]},
                ],
                "outputs": [{"name": "unknown_thing"}],
            },
            "unknown output 'unknown_thing'",
        ),
        (
            {
                "inputs": [
                    {"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["u1"]},
                    {
                        "name": "item_id",
                        "datatype": "BYTES",
                        "shape": [51],
                        "data": [f"i{n}" for n in range(51)],
                    },
                ]
            },
            "max_candidates",
        ),
    ],
)
def test_bad_v2_ranking_requests_get_400_with_the_reason(ranked, body, reason):
    with TestClient(ranked.app(), base_url=LOCAL) as client:
        r = client.post("/v2/models/recommend/infer", json=body)
    assert r.status_code == 400, r.text
    assert reason in r.json()["error"]


def test_a_real_grpc_client_ranks_through_model_infer(ranked):
    import grpc

    from headwater.serving.grpc import inference_pb2, inference_pb2_grpc
    from headwater.serving.grpc.server import build_server

    p = ranked
    server, port = build_server(lambda: p.serving, None, 1000, "127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            request = inference_pb2.ModelInferRequest(model_name="recommend")
            user = request.inputs.add(name="user_id", datatype="BYTES", shape=[1])
            user.contents.bytes_contents.append(b"u9")
            items = request.inputs.add(name="item_id", datatype="BYTES", shape=[len(ITEMS)])
            items.contents.bytes_contents.extend(i.encode() for i in ITEMS)
            request.parameters["k"].int64_param = 2
            answer = stub.ModelInfer(request)
            out = {o.name: o for o in answer.outputs}
            bad = inference_pb2.ModelInferRequest()
            bad.CopyFrom(request)
            bad.parameters["k"].string_param = "two"
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(bad)
    finally:
        server.stop(None)
    expected = p.rank("recommend", {"user_id": "u9"}, ITEMS, k=2)["items"]
    assert [b.decode() for b in out["item_id"].contents.bytes_contents] == [
        i["item_id"] for i in expected
    ]
    assert list(out["rank"].contents.int64_contents) == [1, 2]
    assert list(out["score"].contents.fp64_contents) == [i["score"] for i in expected]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
