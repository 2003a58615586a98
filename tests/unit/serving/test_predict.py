"""Predictions: one code path for HTTP, batch, stream and in-process; routing; logging."""

from __future__ import annotations

import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from headwater import Project
from headwater.serving.routing import bucket
from tests.conftest import write_project
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

LOCAL = "http://localhost"  # the server answers loopback Host names only

SERVICES = (
    DEFINITIONS
    + """
from headwater import Bandit, Service, Variant

checkouts = Stream("checkouts", fields={"user_id": "string", "ts": "timestamp"}, key="user_id",
                   time="ts", owner="web", description="Checkout pages")
rewards = Stream("rewards", fields={"user_id": "string", "prediction_id": "string",
                                    "reward": "int", "ts": "timestamp"},
                 key="user_id", time="ts", owner="web", description="Clicks on offers")
churn_model = models[0]
services = [
    Service("risk", model=churn_model, defaults={"visits_30d": 0}, trigger=checkouts,
            owner="growth", description="Churn risk"),
    Service("risk_ab", variants=[Variant("a", churn_model, weight=3),
                                 Variant("b", churn_model, alias="challenger", weight=1)],
            routing="ab", owner="growth", description="A/B"),
    Service("risk_shadow", variants=[Variant("main", churn_model),
                                     Variant("next", churn_model, alias="challenger")],
            routing="shadow", owner="growth", description="Shadow"),
    Service("risk_bandit", variants=[Variant("a", churn_model), Variant("b", churn_model,
                                                                       alias="challenger")],
            routing="bandit", bandit=Bandit(rewards), owner="growth", description="Bandit"),
]
"""
)


@contextmanager
def champion_and_challenger(folder: Path) -> Iterator[Project]:
    """The project in ``folder``, its churn model trained twice: champion v1, challenger v2
    (trained after one more visit)."""
    with Project(folder, clock=lambda: NOW) as p:
        p.ingest("visits", visits())
        p.process()
        first = p.train("churn").version
        p.promote("churn", first)
        p.ingest("visits", [{"user_id": "u1", "device": "ios", "ts": NOW - timedelta(days=9)}])
        second = p.train("churn").version
        p.promote("churn", second, alias="challenger")
        p.process()
        yield p


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with champion_and_challenger(write_project(tmp_path_factory.mktemp("served") / "p",
                                               SERVICES)) as p:  # fmt: skip
        yield p


def _predictions(p: Project) -> list[dict]:
    p.serving.logger.flush()
    return [orjson.loads(r.payload) for r in p.log.read("predictions", 0, 10**7)]


def test_the_four_paths_give_identical_predictions_and_log_records(served):
    p = served
    before = len(_predictions(p))
    inprocess = p.predict("risk", user_id="u7")
    with TestClient(p.app(), base_url=LOCAL) as client:
        http = client.post("/v1/predict/risk", json={"entity": {"user_id": "u7"}}).json()
    batch = p.score("risk", pd.DataFrame({"user_id": ["u7"], "timestamp": [NOW]}))
    p.ingest("checkouts", [{"user_id": "u7", "ts": NOW - timedelta(seconds=1)}])
    assert p.serving.score_stream("risk") == 1
    stream = orjson.loads(p.log.read("risk_scores", 0, 10)[0].payload)
    scores = [
        inprocess["score"],
        http["predictions"][0]["score"],
        float(batch["score"][0]),
        stream["score"],
    ]
    assert max(scores) - min(scores) < 1e-12, scores
    records = _predictions(p)[before:]
    assert [r["path"] for r in records] == ["inprocess", "http", "batch", "stream"]
    assert len({orjson.dumps(r["features"], option=orjson.OPT_SORT_KEYS) for r in records}) == 1
    for r in records:
        assert set(r) >= {
            "prediction_id",
            "service",
            "variant",
            "model_version",
            "entity",
            "features",
            "context",
            "output",
            "ts_us",
        }
    assert p.serving.score_stream("risk") == 0  # checkpointed: nothing scored twice


def test_ab_routing_is_sticky_and_follows_the_weights(served):
    users = [{"user_id": f"x{i}"} for i in range(2000)]
    first = served.serving.predict("risk_ab", users, "test")
    again = served.serving.predict("risk_ab", users, "test")
    assert [p.variant for p in first] == [p.variant for p in again]
    share_b = sum(p.variant == "b" for p in first) / len(first)
    assert abs(share_b - 0.25) < 3 * (0.25 * 0.75 / len(first)) ** 0.5
    assert {p.model_version for p in first if p.variant == "b"} == {2}
    assert bucket("risk_ab", "x1") == bucket("risk_ab", "x1") != bucket("risk_ab", "x2")


def test_shadow_variants_are_logged_but_never_answer(served):
    p = served
    before = len(_predictions(p))
    answers = p.serving.predict("risk_shadow", [{"user_id": f"u{i}"} for i in range(20)], "t")
    champion = p.serving.predict("risk", [{"user_id": f"u{i}"} for i in range(20)], "t")
    p.serving.predictor("risk_shadow").drain()
    assert {a.variant for a in answers} == {"main"}
    assert [a.score for a in answers] == [c.score for c in champion]
    logged = [r for r in _predictions(p)[before:] if r["service"] == "risk_shadow"]
    assert sum(r["shadow"] for r in logged) == 20
    assert {r["model_version"] for r in logged if r["shadow"]} == {2}


def test_the_bandit_learns_to_serve_the_better_variant(served):
    p = served
    predictor = p.serving.predictor("risk_bandit")
    rate = {"a": 0.2, "b": 0.7}
    rnd = __import__("random").Random(4)
    chosen = []
    for round_ in range(30):
        preds = predictor.predict([{"user_id": f"u{rnd.randrange(150)}"} for _ in range(20)], "t")
        chosen += [x.variant for x in preds]
        p.ingest(
            "rewards",
            [
                {
                    "user_id": x.entity["user_id"],
                    "prediction_id": x.prediction_id,
                    "reward": int(rnd.random() < rate[x.variant]),
                    "ts": NOW - timedelta(seconds=1),
                }
                for x in preds
            ],
        )
        p.serving.logger.flush()
        predictor.router.learn()
        del round_
    late = chosen[-200:]
    assert late.count("b") / len(late) > 0.8
    posteriors = predictor.router.learn()
    assert posteriors["b"][0] / sum(posteriors["b"]) > posteriors["a"][0] / sum(posteriors["a"])


def test_bad_requests_unknown_entities_and_metrics(served):
    with TestClient(served.app(), base_url=LOCAL) as client:
        unknown = client.post("/v1/predict/risk", json={"entity": {"user_id": "nobody"}}).json()
        assert unknown["predictions"][0]["unknown_entity"] is True
        assert client.post("/v1/predict/risk", json={"entity": {"uid": 1}}).status_code == 422
        assert (
            # an unknown service is 404 as the OpenAPI says (issue 18: it was 422)
            client.post("/v1/predict/risky", json={"entity": {"user_id": "a"}}).status_code == 404
        )
        assert (
            client.post(
                "/v1/predict/risk", content=b"{", headers={"content-type": "application/json"}
            ).status_code
            == 422
        )
        batch = client.post(
            "/v1/predict/risk", json={"entities": [{"user_id": "u1"}, {"user_id": "u2"}]}
        ).json()["predictions"]
        assert [b["entity"]["user_id"] for b in batch] == ["u1", "u2"]
        text = client.get("/metrics").text
        assert 'headwater_predictions_total{service="risk",variant="champion"}' in text
        assert "headwater_feature_fetch_seconds_bucket" in text
        assert 'headwater_unknown_entities_total{service="risk"} 1.0' in text


def test_the_fast_path_and_the_fastapi_route_answer_alike(served):
    """A running server answers predictions in ``FastPaths``; the FastAPI route (kept
    for the OpenAPI document) must give the same statuses and bodies."""
    from fastapi import FastAPI

    fast = served.app()
    assert fast.fast_paths is not None
    slow = served.app()
    slow.fast_paths = None
    bodies = [
        {"entity": {"user_id": "nobody"}},
        {"entity": {"uid": 1}},
        {"entities": "u1"},
        ["not", "an", "object"],
    ]

    def answers(app: FastAPI) -> list[tuple[int, dict]]:
        out = []
        with TestClient(app, base_url=LOCAL) as client:
            for body in bodies:
                r = client.post("/v1/predict/risk", json=body)
                out.append((r.status_code, _without_ids(r.json())))
            r = client.post("/v1/predict/risky", json=bodies[0])
            out.append((r.status_code, r.json()))
        return out

    assert answers(fast) == answers(slow)
    assert [status for status, _ in answers(fast)] == [200, 422, 422, 422, 404]

    lookups = [
        {"entities": [{"user_id": "u1"}, {"user_id": "nobody"}], "features": ["visits_7d"]},
        {"entities": [{"user_id": "u1"}], "features": ["visits_7d"], "at": "2026-02-20T10:00:00Z"},
        {"entities": [{"user_id": "u1"}], "features": ["visit_7d"]},  # unknown: 404
        {"entities": [{"uid": "u1"}], "features": ["visits_7d"]},  # no key: 422
        {"entities": [{"user_id": "u1"}], "features": []},
    ]

    def lookup(app: FastAPI) -> list[tuple[int, dict]]:
        with TestClient(app, base_url=LOCAL) as client:
            return [
                (r.status_code, r.json())
                for r in (client.post("/v1/features", json=body) for body in lookups)
            ]

    fast_lookups = lookup(fast)
    assert fast_lookups == lookup(slow)
    assert [status for status, _ in fast_lookups] == [200, 200, 404, 422, 422]
    assert fast_lookups[1][1]["at"] == "2026-02-20T10:00:00Z"
    with TestClient(fast, base_url=LOCAL) as client:
        too_big = b'{"entity": {"user_id": "' + b"x" * (17 * 1024 * 1024) + b'"}}'
        r = client.post(
            "/v1/predict/risk", content=too_big, headers={"content-type": "application/json"}
        )
        assert r.status_code == 413 and "limit" in r.json()["detail"]
        assert client.get("/v1/predict/risk").status_code == 405  # not ours: passed through
        assert client.post("/v1/predict/risk/extra", json=bodies[0]).status_code == 404


def _without_ids(body: dict) -> dict:
    for p in body.get("predictions", []):
        p.pop("prediction_id")
    return body


def test_a_service_without_a_promoted_version_answers_503(project_factory):
    folder = project_factory(SERVICES)
    with Project(folder, clock=lambda: NOW) as p, TestClient(p.app(), base_url=LOCAL) as client:
        r = client.post("/v1/predict/risk", json={"entity": {"user_id": "u1"}})
        assert r.status_code == 503
        assert "has no 'champion' version" in r.json()["detail"]


def _wait_for(condition, seconds: float = 60) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_promotion_takes_effect_under_load_without_failed_requests(served, monkeypatch):
    p = served
    monkeypatch.setattr(p.serving.scorers, "_refresh", 0.05)
    failures, versions = [], []
    stop = threading.Event()
    with TestClient(p.app(), base_url=LOCAL) as client:

        def hammer() -> None:
            while not stop.is_set():
                r = client.post("/v1/predict/risk", json={"entity": {"user_id": "u3"}})
                if r.status_code != 200:
                    failures.append(r.text)
                else:
                    versions.append(r.json()["predictions"][0]["model_version"])

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        _wait_for(lambda: len(versions) >= 50)
        p.promote("churn", 2, force=True, reason="hot swap")
        seen = len(versions)
        # the refresher thread swaps version 2 in within a pass (about a second)
        _wait_for(lambda: versions[seen:].count(2) >= 100)
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert versions[0] == 1 and versions[-1] == 2
    assert statistics.mode(versions[-50:]) == 2
    p.promote("churn", 1, force=True, reason="back")
    # and back: the later tests of this module see version 1 again, as the server does
    model = p.definitions.models["churn"]
    _wait_for(lambda: p.serving.scorers.get(model, "champion").version == 1, seconds=5)


def test_stream_scoring_replays_after_a_crash_without_duplicates(served, monkeypatch):
    p = served
    p.serving.score_stream("risk")  # catch up with earlier tests
    before = p.log.end_offset("risk_scores")
    p.ingest(
        "checkouts", [{"user_id": f"u{i}", "ts": NOW - timedelta(seconds=2)} for i in range(30)]
    )
    real_write = p.online_store.write

    def crash(states, checkpoints):  # outputs are durable, the checkpoint is not
        raise RuntimeError("killed between the outputs and the checkpoint")

    monkeypatch.setattr(p.online_store, "write", crash)
    with pytest.raises(RuntimeError):
        p.serving.score_stream("risk", batch_size=10)
    monkeypatch.setattr(p.online_store, "write", real_write)
    assert p.serving.score_stream("risk", batch_size=10) == 30
    outputs = [orjson.loads(r.payload) for r in p.log.read("risk_scores", before, 1000)]
    assert len(outputs) == 30
    assert len({o["trigger_offset"] for o in outputs}) == 30


def test_predictions_can_be_logged_as_json_lines(served, capsys):
    import logging

    from headwater.serving import log_format as logs

    logs.configure(logging.INFO)
    try:
        with TestClient(served.app(), base_url=LOCAL) as client:
            answer = client.post("/v1/predict/risk", json={"entity": {"user_id": "u5"}}).json()
            ready = client.get("/readyz").json()
    finally:
        logs.configure(logging.WARNING)
    line = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "prediction"
    assert line["prediction_id"] == answer["predictions"][0]["prediction_id"]
    risk = ready["services"]["risk"]
    assert risk["ready"] and risk["variants"]["champion"]["model"] == "churn"
    assert risk["variants"]["champion"]["version"] == 1
    assert risk["variants"]["champion"]["status"] == "loaded"


EXPOSURES = (
    SERVICES
    + """
logged = Stream("predictions", fields={"user_id": "string", "service": "string",
                                       "shadow": "bool", "ts_us": "timestamp"},
                key="user_id", time="ts_us", unknown_fields="drop", owner="ml-platform",
                description="Every prediction, as serving logs it")
exposures = Feature("exposures", entity=user, stream=logged, aggregation=agg.count(),
                    windows=["1d", "lifetime"], where=(col("service") == "risk")
                    & (col("shadow") == False), owner="growth",  # noqa: E712
                    description="How many times the user was shown a churn score")
"""
)


def test_exposures_are_a_feature_of_the_predictions_stream(project_factory):
    folder = project_factory(
        EXPOSURES.replace("from headwater import Entity,", "from headwater import col, Entity,")
    )
    with Project(folder, clock=lambda: NOW) as p:
        p.ingest("visits", visits())
        p.process()
        p.promote("churn", p.train("churn").version)
        for _ in range(3):
            p.serving.predict("risk", [{"user_id": "u1"}, {"user_id": "u2"}], "test")
        p.serving.predict("risk", [{"user_id": "u1"}], "test")
        p.serving.logger.flush()
        p.process()
        online = p.online_features(
            [{"user_id": "u1"}, {"user_id": "u2"}],
            ["exposures_lifetime", "exposures_1d"],
            at=NOW + timedelta(seconds=1),
        )
        assert [r["exposures_lifetime"] for r in online] == [4, 3]
        spine = pd.DataFrame(
            {"user_id": ["u1", "u2"], "timestamp": [NOW + timedelta(seconds=1)] * 2}
        )
        offline = p.training_set(spine, ["exposures_lifetime"])
        assert list(offline["exposures_lifetime"]) == [4, 3]
        with pytest.raises(Exception, match="written by serving only"):
            p.ingest("predictions", [{"user_id": "u1"}])


def test_requests_never_read_the_registry_and_the_alias_refresh_is_one_keyed_read(served):
    """Loaded versions serve without the registry; the refresher thread reads every alias
    served in one keyed read per pass (no whole-collection read, whatever the models)."""
    from tests.unit.registry.test_keyed_reads import Spy

    p = served
    for service in ("risk", "risk_ab"):
        p.serving.predict(service, [{"user_id": "u1"}], "inprocess")  # models loaded
    registry = p.serving.scorers._registry
    spy = Spy(registry._metadata)
    registry._metadata = spy
    try:
        p.serving.scorers.refresh()  # as the refresher thread does each second
        for i in range(300):
            p.serving.predict("risk_ab", [{"user_id": f"u{i % 40}"}], "inprocess")
    finally:
        registry._metadata = spy.store
    here = [c for c in spy.calls if c[2] == threading.current_thread().name]
    assert len(here) == 1  # the refresh called above; none from the 300 predictions
    assert {c[2] for c in spy.calls} <= {threading.current_thread().name, "alias-refresh"}
    for collection, ids, _ in spy.calls:  # each pass: one keyed read of the aliases served
        assert collection == "model_aliases" and ids is not None
        assert set(ids) == {"churn:champion", "churn:challenger"}


def test_the_logger_writes_whatever_an_in_process_caller_put_in_a_record(tmp_path):
    """numpy numbers, decimals, dates in a record's context or features are logged (as
    numbers, or as their text) instead of failing the prediction or the logger's thread."""
    import datetime as dt
    from decimal import Decimal

    import numpy as np

    from headwater.log.embedded import EmbeddedLog
    from headwater.log.ids import new_id
    from headwater.serving.prediction_log import PredictionLogger

    log = EmbeddedLog(tmp_path / "log.db")
    logger = PredictionLogger(log, lambda: 1)
    record = {
        "prediction_id": new_id(),
        "ts_us": 1,
        "features": {"x": np.float64(1.5), "n": np.int64(3)},
        "context": {"price": Decimal("9.90"), "day": dt.date(2026, 12, 6), 7: "seven"},
    }
    logger.log([record])
    logger.flush()
    [stored] = [orjson.loads(r.payload) for r in log.read("predictions", 0, 10)]
    assert stored["features"] == {"x": 1.5, "n": 3}
    assert stored["context"] == {"price": "9.90", "day": "2026-12-06", "7": "seven"}
    assert logger.errors == 0
    log.close()
