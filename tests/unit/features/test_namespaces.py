"""Feature namespaces: two teams each have a ``sessions`` feature, as ``growth.sessions`` and
``web.sessions``; their outputs are named so everywhere (training sets, online values, models,
the HTTP API, scopes)."""

from __future__ import annotations

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from headwater import Project
from headwater.definitions import DefinitionError
from tests.unit.training.conftest import NOW, visits

TWO_TEAMS = """
from headwater import Derived, Entity, Feature, Label, Model, Service, Stream, agg, col

user = Entity("user", keys="user_id", owner="platform", description="A user")
visits = Stream("visits", fields={"user_id": "string", "device": "string", "ts": "timestamp"},
                key="user_id", time="ts", owner="web", description="Visits")
features = [
    Feature("sessions", namespace="growth", entity=user, stream=visits,
            aggregation=agg.count(), windows=["1d", "7d"], owner="growth",
            description="Every visit"),
    Feature("sessions", namespace="web", entity=user, stream=visits, aggregation=agg.count(),
            where=col("device") == "ios", windows=["7d"], owner="web",
            description="Visits from the app"),
    Derived("app_share", namespace="web", inputs=["web.sessions_7d", "growth.sessions_7d"],
            fn=lambda c: c["web.sessions_7d"] / (c["growth.sessions_7d"] + 1.0), owner="web",
            description="The app's share of visits"),
]
churned = Label("churned_7d", entity=user, stream=visits, aggregation=agg.count(),
                horizon="7d", transform=lambda n: n == 0, owner="growth",
                description="No visit in the next 7 days")


def lightgbm():
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_estimators=20, n_jobs=1, verbose=-1, random_state=1)


models = [Model("churn", label=churned, estimator=lightgbm, lookback="14d", min_rows=50,
                features=["growth.sessions_1d", "growth.sessions_7d", "web.sessions_7d",
                          "web.app_share"], owner="growth", description="Churn")]
services = [Service("risk", model=models[0], owner="growth", description="Churn risk")]
"""
NAMES = ["growth.sessions_1d", "growth.sessions_7d", "web.sessions_7d", "web.app_share"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from tests.conftest import write_project

    folder = write_project(tmp_path_factory.mktemp("ns") / "p", TWO_TEAMS)
    with open(folder / "headwater.toml", "a") as toml:
        toml.write('\n[server]\nauth = "keys"\n')
    with Project(folder, clock=lambda: NOW) as p:
        p.apply()
        p.ingest("visits", visits(users=60, days=30))
        p.process()
        yield p


def test_two_teams_use_one_short_name_under_their_namespaces(project):
    p = project
    assert {"growth.sessions", "web.sessions"} <= set(p.definitions.features)
    assert "web.app_share" in p.definitions.derived
    registered = {(d.kind, d.name) for d in p.metadata.definitions()}
    assert {("feature", "growth.sessions"), ("feature", "web.sessions")} <= registered
    listed = p.plan().of_team("web")
    assert all(c.owner == "web" for c in listed.changes)


def test_training_sets_and_online_values_agree_under_namespaced_names(project):
    p = project
    users = [f"u{i}" for i in range(12)]
    spine = pd.DataFrame({"user_id": users, "timestamp": [NOW] * len(users)})
    offline = p.training_set(spine, NAMES)
    online = p.online_features([{"user_id": u} for u in users], NAMES, at=NOW)
    for row, values in zip(offline.to_dict("records"), online, strict=True):
        assert values["growth.sessions_7d"] == row["growth.sessions_7d"]
        assert values["web.sessions_7d"] == row["web.sessions_7d"]
        assert values["web.app_share"] == pytest.approx(row["web.app_share"])
    assert (offline["web.sessions_7d"] <= offline["growth.sessions_7d"]).all()
    assert offline["growth.sessions_7d"].sum() > offline["web.sessions_7d"].sum() > 0


def test_models_scopes_and_the_http_api_take_namespaced_names(project):
    p = project
    p.promote("churn", p.train("churn").version)
    assert p.registry.version("churn", 1)["signature"]["features"] == NAMES
    score = p.predict("risk", user_id="u3")["score"]
    _, growth_key = p.create_key("apps", ["features:read:growth.sessions", "predict:risk"])
    with TestClient(p.app(), base_url="http://localhost") as client:
        auth = {"Authorization": f"Bearer {growth_key}"}
        body = {"entities": [{"user_id": "u3"}], "features": ["growth.sessions_7d"]}
        answer = client.post("/v1/features", json=body, headers=auth)
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["growth.sessions_7d"] >= 0
        body["features"] = ["web.sessions_7d"]  # the other team's namesake: not granted
        assert client.post("/v1/features", json=body, headers=auth).status_code == 403
        predicted = client.post("/v1/predict/risk", json={"entity": {"user_id": "u3"}},
                                headers=auth)  # fmt: skip
        assert predicted.json()["predictions"][0]["score"] == pytest.approx(score)


def test_bad_names_and_collisions_are_clear_errors(project_factory):
    feature = (
        'Feature("sessions", {ns}entity=user, stream=visits, aggregation=agg.count(), '
        'owner="growth", description="Visits")'
    )
    head = TWO_TEAMS.split("features = [")[0]
    twice = head + f"features = [{feature.format(ns='')}, {feature.format(ns='')}]\n"
    with pytest.raises(DefinitionError, match="two features are named 'sessions'"):
        Project(project_factory(twice))
    upper = feature.format(ns="namespace='Growth', ")
    bad = head + f"features = [{upper}]\n"
    with pytest.raises(DefinitionError, match="namespace name 'Growth' is not valid"):
        Project(project_factory(bad))
    from headwater import Derived

    with pytest.raises(DefinitionError, match="feature name 'growth..sessions_7d' is not valid"):
        Derived("x", inputs=["growth..sessions_7d"], fn=lambda c: c, owner="growth",
                description="Bad")  # fmt: skip
