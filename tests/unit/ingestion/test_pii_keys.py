"""Entity keys that are PII: stored as pseudonyms everywhere, while applications keep calling
features, predictions, training sets and batch scoring with the clear ids (the read paths
pseudonymize them for the lookup); logged predictions hold the pseudonym. A replay re-keyed
into staging keeps every entity's results, under the mapped pseudonym."""

from __future__ import annotations

import re
from datetime import timedelta

import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from headwater import DefinitionError, Project
from headwater.environments.replay import ReplayOptions
from headwater.privacy.policies import SECRET_ENV, PiiSecret, PiiSecretError, is_pseudonym
from tests.conftest import write_project
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

SOURCE = (
    DEFINITIONS.replace(
        'key="user_id", time="ts", owner="web", description="Visits")',
        'key="user_id", time="ts", owner="web", description="Visits", pii=["user_id"])',
    )
    + """
from headwater import Service

services = [Service("risk", model=models[0], owner="growth", description="Churn risk")]
"""
)
CLEAR = re.compile(rb'"u\d+"')  # a clear user id as a JSON string
NUMERIC = ["visits_1d", "visits_7d", "visits_30d"]
STAGING = "staging-secret-" + "s" * 32


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    assert 'pii=["user_id"]' in SOURCE
    folder = write_project(tmp_path_factory.mktemp("keys") / "shop", SOURCE)
    config = folder / "headwater.toml"
    config.write_text(config.read_text() + "[environments.production]\n[environments.staging]\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("HEADWATER_PII_SECRET_STAGING", STAGING)
    with Project(folder, env="production", clock=lambda: NOW) as p:
        assert not p.ingest("visits", visits(users=80)).rejected
        p.process()
        p.promote("churn", p.train("churn").version)
        yield p
    mp.undo()


def _pseudonym(p: Project, clear: str) -> str:
    value = p.online.entity_keys.value(clear)
    assert isinstance(value, str) and is_pseudonym(value)
    return value


def test_keys_are_stored_as_pseudonyms(shop):
    rows = [orjson.loads(r.payload) for r in shop.log.read("visits", 0, 10**6)]
    assert rows and all(is_pseudonym(r["user_id"]) for r in rows)
    assert not CLEAR.search(b"".join(r.payload for r in shop.log.read("visits", 0, 10**6)))
    assert _pseudonym(shop, "u1") in {r["user_id"] for r in rows}


def test_features_and_training_sets_take_the_clear_ids(shop):
    clear = [{"user_id": f"u{i}"} for i in range(10)]
    hidden = [{"user_id": _pseudonym(shop, f"u{i}")} for i in range(10)]
    by_clear = shop.online_features(clear, NUMERIC)
    assert by_clear == shop.online_features(hidden, NUMERIC)
    assert sum(row["visits_30d"] or 0 for row in by_clear) > 0
    spine = pd.DataFrame({"user_id": [f"u{i}" for i in range(10)], "timestamp": NOW})
    a = shop.training_set(spine, NUMERIC)
    b = shop.training_set(spine.assign(user_id=[h["user_id"] for h in hidden]), NUMERIC)
    assert a[NUMERIC].equals(b[NUMERIC]) and a["visits_30d"].sum() > 0
    assert list(a["user_id"]) == [h["user_id"] for h in hidden]  # answered as stored


def test_predictions_take_the_clear_id_and_log_the_pseudonym(shop):
    start = shop.log.end_offset("predictions")
    in_process = shop.predict("risk", user_id="u3")
    with TestClient(shop.app(), base_url="http://localhost") as client:
        http = client.post("/v1/predict/risk", json={"entity": {"user_id": "u3"}}).json()
        features = client.post(
            "/v1/features", json={"entities": [{"user_id": "u3"}], "features": ["visits_30d"]}
        ).json()
    batch = shop.score("risk", pd.DataFrame({"user_id": ["u3"], "timestamp": [NOW]}))
    hidden = shop.predict("risk", user_id=_pseudonym(shop, "u3"))
    scores = [in_process["score"], http["predictions"][0]["score"], hidden["score"]]
    assert max(scores) - min(scores) < 1e-12
    assert abs(float(batch["score"][0]) - scores[0]) < 1e-9
    assert (
        features["results"][0]["visits_30d"]
        == shop.online_features({"user_id": "u3"}, ["visits_30d"])["visits_30d"]
    )
    shop.serving.logger.flush()
    logged = shop.log.read("predictions", start, 100)
    assert len(logged) == 4
    assert {orjson.loads(r.payload)["entity"]["user_id"] for r in logged} == {
        _pseudonym(shop, "u3")
    }
    assert not any(CLEAR.search(r.payload) for r in logged)


def test_a_key_pii_in_one_stream_only_is_refused(tmp_path):
    mixed = (
        SOURCE
        + """
clicks = Stream("clicks", fields={"user_id": "string", "ts": "timestamp"}, key="user_id",
                time="ts", owner="web", description="Clicks")
"""
    )
    folder = write_project(tmp_path / "mixed", mixed)
    with pytest.raises(DefinitionError, match="'user_id' is PII in visits but not in clicks"):
        Project(folder)


def test_without_a_secret_a_read_by_clear_id_is_refused(tmp_path, monkeypatch):
    folder = write_project(tmp_path / "p", SOURCE)
    monkeypatch.delenv(SECRET_ENV)
    with Project(folder) as p, pytest.raises(PiiSecretError, match="init-secret"):
        p.online_features({"user_id": "u1"}, NUMERIC)


def test_a_rekeyed_replay_keeps_every_entitys_results_under_the_mapped_pseudonym(shop):
    with Project(shop.root, env="staging", clock=lambda: NOW) as staging:
        shop.replay_into(staging, options=ReplayOptions(rekey=True)).run()
        staging.process()
        target = PiiSecret(STAGING.encode())
        mapped = {f"u{i}": target.pseudonym(_pseudonym(shop, f"u{i}")) for i in range(20)}
        stored = {orjson.loads(r.payload)["user_id"] for r in staging.log.read("visits", 0, 10**6)}
        assert set(mapped.values()) <= stored
        assert not stored & {_pseudonym(shop, f"u{i}") for i in range(20)}
        a = shop.online_features([{"user_id": u} for u in mapped], NUMERIC)
        b = staging.online_features([{"user_id": m} for m in mapped.values()], NUMERIC)
        assert a == b
        # the clear id means another entity in staging: its secret maps it elsewhere
        assert staging.online.entity_keys.value("u1") not in stored
        day = timedelta(days=1)
        times = [NOW - day * d for d in (0, 5)]
        spine_a = pd.DataFrame([{"user_id": u, "timestamp": t} for u in mapped for t in times])
        spine_b = spine_a.assign(user_id=[mapped[u] for u in spine_a["user_id"]])
        assert shop.training_set(spine_a, NUMERIC)[NUMERIC].equals(
            staging.training_set(spine_b, NUMERIC)[NUMERIC]
        )


def test_a_ranking_takes_the_clear_request_id(tmp_path):
    from tests.unit.serving.test_ranking import DEFINITIONS as RANKING
    from tests.unit.serving.test_ranking import ITEMS, clicks

    source = RANKING.replace(
        'key="user_id", time="ts",', 'key="user_id", time="ts", pii=["user_id"],'
    )
    assert source != RANKING
    folder = write_project(tmp_path / "rank", source)
    from tests.unit.serving.test_ranking import NOW as RANK_NOW

    with Project(folder, clock=lambda: RANK_NOW) as p:
        p.ingest("clicks", clicks())
        p.process()
        p.promote("affinity", p.train("affinity").version)
        hidden = _pseudonym(p, "u3")
        clear = p.rank("recommend", {"user_id": "u3"}, ITEMS)
        stored = p.rank("recommend", {"user_id": hidden}, ITEMS)
        assert [(i["item_id"], i["score"]) for i in clear["items"]] == [
            (i["item_id"], i["score"]) for i in stored["items"]
        ]
        assert {i["item_id"] for i in clear["items"]} <= set(ITEMS)  # items are not PII
        p.serving.logger.flush()
        logged = [orjson.loads(r.payload) for r in p.log.read("predictions", 0, 10**6)]
        assert {x["entity"]["user_id"] for x in logged} == {hidden}


def test_a_skew_alert_names_the_entity_by_its_pseudonym(shop):
    from headwater.definitions.types import to_micros
    from headwater.monitoring.monitor import Monitor

    predictor = shop.serving.predictor("risk")
    users = [{"user_id": "u3"}]
    keyed = shop.online.entity_keys.rows(users)
    values = shop.online_features(users, NUMERIC)
    values[0]["visits_30d"] += 5  # served from a stale value
    predictor.score(keyed, values, [True], None, "t", features_at=to_micros(NOW))
    alerts: list[dict] = []
    Monitor(shop.monitor_context(), alert=alerts.append).skew(
        "risk", to_micros(NOW) - 1, to_micros(NOW) + 1, record=True
    )
    (alert,) = [a for a in alerts if a["feature"] == "visits_30d"]
    assert alert["entity"] == {"user_id": _pseudonym(shop, "u3")}
    logged = b"".join(r.payload for r in shop.log.read("alerts", 0, 10**6))
    assert not CLEAR.search(logged)  # no clear id in any alert
