"""The UI's pages drawn in-process (auth off) on a project with an A/B service judged by
feedback and a shadow service: the figures on the pages are the platform's own."""

from __future__ import annotations

import re
from datetime import timedelta

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from headwater import Project
from headwater.definitions.types import to_micros
from headwater.log.base import DEAD_LETTER_STREAM
from headwater.monitoring.experiment import analyze
from headwater.monitoring.monitor import experiment_outcomes
from headwater.ui import reads
from tests.conftest import write_project
from tests.unit.monitoring.test_feedback import SERVICES
from tests.unit.training.conftest import NOW, visits

SHADOW = """
services.append(
    Service("risk_shadow", variants=[Variant("main", models[0]),
                                     Variant("next", models[0], alias="challenger")],
            routing="shadow", owner="web", description="The next churn model, in the shadow"))
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    clock = {"t": NOW - timedelta(days=2)}
    folder = write_project(tmp_path_factory.mktemp("ui") / "p", SERVICES + SHADOW)
    with Project(folder, clock=lambda: clock["t"]) as p:
        p.apply(by="alice")
        p.ingest("visits", visits())
        p.ingest("visits", [{"user_id": "u1", "device": 3, "ts": NOW}])  # a dead letter
        p.process()
        p.promote("churn", p.train("churn").version)
        p.promote("churn", p.train("churn").version, alias="challenger")
        served = p.serving.predict("offers", [{"user_id": f"u{i}"} for i in range(200)], "t")
        p.serving.predict("risk_shadow", [{"user_id": f"u{i}"} for i in range(30)], "t")
        p.serving.predictor("risk_shadow").drain()
        clock["t"] += timedelta(hours=2)  # the feedback arrives an hour after the offers
        rng = np.random.default_rng(3)
        feedback = [
            {
                "prediction_id": s.prediction_id,
                "converted": int(rng.random() < s.score),
                "ts": NOW - timedelta(days=2) + timedelta(hours=1),
                "event_id": f"f{i}",
            }
            for i, s in enumerate(served)
        ]
        assert p.ingest("offer_outcomes", feedback).accepted == len(feedback)
        p.serving.logger.flush()
        client = TestClient(p.app(), base_url="http://127.0.0.1")
        yield p, client, clock


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_experiment_panel_shows_the_platforms_own_analysis(shop):
    p, client, clock = shop
    page = client.get("/ui/services/offers")
    assert page.status_code == 200
    now = to_micros(clock["t"])
    outcomes = experiment_outcomes(
        p.monitor_context(), "offers", now - 30 * 86_400_000_000, now + 1
    )
    stats, comparisons = analyze(outcomes)
    body = text(page.text)
    for v in stats:
        assert f"{v.variant} (n={v.n:,})" in body
    (c,) = comparisons
    assert f"{c.treatment} vs {c.control}" in body and c.verdict in body
    assert f"{c.difference:+.4g}" in body
    assert "Predictions of offers per day" in body


def test_shadow_comparisons_pair_each_shadow_with_the_answer_it_shadowed(shop):
    p, client, _ = shop
    body = text(client.get("/ui/services/risk_shadow").text)
    row = re.search(r"next (\d+) ([\d.e-]+) ", body)
    assert row and row.group(1) == "30", body[body.find("Shadow variant") :][:300]
    frame = reads.predictions(p.app().state.ui)  # the same read the page makes
    mine = frame[frame["service"] == "risk_shadow"]
    answers = mine[~mine["shadow"]].sort_values("ts_us")["output"].to_numpy()
    shadows = mine[mine["shadow"]].sort_values("ts_us")["output"].to_numpy()
    assert np.isclose(float(row.group(2)), np.mean(np.abs(answers - shadows)), rtol=1e-3)


def test_versions_record_who_applied_them_and_dead_letters_their_reason(shop):
    p, client, _ = shop
    body = text(client.get("/ui/features/visits").text)
    (registered,) = p.metadata.history("feature", "visits")
    assert f"{registered.version} current alice" in body
    assert "Read by churn" in body
    stream = text(client.get("/ui/streams/visits").text)
    dead = [orjson.loads(r.payload) for r in p.log.read(DEAD_LETTER_STREAM, 0, 10_000)]
    rejected = sum(d["stream"] == "visits" for d in dead)
    events = p.log.end_offset("visits")
    overview = text(client.get("/ui").text)
    # every event was ingested two hours ago (the clock moved on): none in the last hour
    assert f"visits web {events:,} 0 {events:,} 2 h ago {rejected:,} " in overview
    assert rejected >= 1 and f"{rejected:,} rejected events, kept in _dead_letter" in stream


def test_every_page_answers_and_unknown_names_are_404(shop):
    _, client, _ = shop
    for url in (
        "/ui",
        "/ui/streams",
        "/ui/features",
        "/ui/lineage",
        "/ui/models",
        "/ui/models/churn",
        "/ui/models/churn/compare?a=1&b=2",
        "/ui/services",
        "/ui/monitoring",
        "/ui/monitoring/churn",
        "/ui/lineage?team=growth",
    ):
        assert client.get(url).status_code == 200, url
    for url in (
        "/ui/streams/nope",
        "/ui/models/nope",
        "/ui/services/nope",
        "/ui/models/churn/compare?a=1&b=9",
        "/ui/models/churn/compare?a=x",
        "/ui/features/visits?value=nope",
    ):
        answer = client.get(url)
        assert answer.status_code == 404 and "<h1>Not found</h1>" in answer.text, url
    assert client.get("/ui/streams/%3Cscript%3E").text.count("<script>") == 0


def test_the_overview_names_the_environment_its_namespace_and_the_others(tmp_path):
    folder = write_project(tmp_path / "p", SERVICES)
    toml = folder / "headwater.toml"
    toml.write_text(toml.read_text() + "[environments.production]\n[environments.staging]\n")
    with Project(folder, env="staging") as p:
        body = text(TestClient(p.app(), base_url="http://127.0.0.1").get("/ui").text)
    assert "test · environment staging" in body
    assert "This environment staging Namespace on shared stores test_staging" in body
    assert "Other environments production" in body


def test_services_show_their_readiness_as_readyz_does(shop):
    p, client, _ = shop
    ready = p.serving.readiness()
    listing = text(client.get("/ui/services").text)
    for name, state in ready.items():
        word = "ready" if state["ready"] else "not ready"
        assert re.search(rf"{name} \S+ {word}", listing), (name, listing)
    page = text(client.get("/ui/services/offers").text)
    assert "Loaded here" in page
    statuses = {v["status"] for v in ready["offers"]["variants"].values()}
    assert any(status in page for status in statuses)
