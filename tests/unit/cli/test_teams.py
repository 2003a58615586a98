"""``--team`` on plan, models list, runs, monitor and keys list: each team sees what it owns."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from headwater import Project
from headwater.cli import app
from tests.conftest import write_project
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

TEAMS = (
    DEFINITIONS
    + """
from headwater import Service

bounce = Model("bounce", label=churned, features=NUMERIC, estimator=logistic, lookback="14d",
               min_rows=50, owner="web", description="Another team's model")
models = [models[0], bounce]
services = [
    Service("risk", model=models[0], owner="growth", description="Churn risk"),
    Service("bounce_risk", model=bounce, owner="web", description="Bounce risk"),
]
"""
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_project(tmp_path_factory.mktemp("teams") / "p", TEAMS)
    with Project(root, clock=lambda: NOW) as p:
        p.apply()
        p.ingest("visits", visits(users=60, days=20))
        p.process()
        for model in ("churn", "bounce"):
            p.promote(model, p.train(model).version)
        for user in range(20):
            p.predict("risk", user_id=f"u{user}")
            p.predict("bounce_risk", user_id=f"u{user}")
        p.create_key("web", ["predict:bounce_risk"])
        p.create_key("growth", ["predict:risk"])
    return root


def _cli(folder: Path, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "-p", str(folder)])
    assert result.exit_code == 0, result.output
    return result.output


def _models_column(output: str) -> set[str]:
    return {line.split()[1] for line in output.splitlines() if line.startswith("│ ")}


def test_models_runs_and_keys_list_what_the_team_owns(folder: Path) -> None:
    assert _models_column(_cli(folder, "models", "list")) == {"churn", "bounce"}
    assert _models_column(_cli(folder, "models", "list", "--team", "web")) == {"bounce"}
    runs = _cli(folder, "runs", "--team", "web")
    assert "bounce" in runs and "churn" not in runs
    runs = _cli(folder, "runs", "--team", "growth")
    assert "churn" in runs and "bounce" not in runs
    keys = _cli(folder, "keys", "list", "--team", "web")
    assert "predict:bounce_risk" in keys and "predict:risk " not in keys + " "
    assert "growth" not in keys


def test_plan_shows_the_changes_to_the_teams_definitions(folder: Path) -> None:
    source = (folder / "definitions.py").read_text()
    changed = source.replace('description="Another team\'s model"', 'description="Bounces"')
    (folder / "definitions.py").write_text(changed)
    try:
        everything = _cli(folder, "plan")
        assert "bounce" in everything and "updated" in everything
        assert "nothing to change" in _cli(folder, "plan", "--team", "growth")
        web = _cli(folder, "plan", "--team", "web")
        assert "plan of team 'web'" in web and "bounce" in web and "metadata: description" in web
    finally:
        (folder / "definitions.py").write_text(source)


def test_an_unknown_team_is_an_error_naming_the_owners(folder: Path) -> None:
    result = CliRunner().invoke(app, ["models", "list", "--team", "wbe", "-p", str(folder)])
    assert result.exit_code != 0
    assert "no definition is owned by team 'wbe'; did you mean 'web'?" in str(result.exception)
    assert "owners: growth, web" in str(result.exception)


def test_monitor_of_a_team_reports_and_alerts_on_its_services_only(folder: Path) -> None:
    alerts: list[dict] = []
    with Project(folder, clock=lambda: NOW) as p:
        web = p.monitor(team="web", days=1, alert=alerts.append)
        everyone = p.monitor(days=1)
    assert {r.service for r in web.reports} == {"bounce_risk"}
    assert {r.service for r in everyone.reports} == {"risk", "bounce_risk"}
    assert web.reports[0].predictions == 20
    assert all(a.get("service") in (None, "bounce_risk") for a in alerts)
    assert set(web.skews) == {"bounce_risk"}
    output = _cli(folder, "monitor", "--team", "web", "--days", "3650", "--json")
    assert '"service":"bounce_risk"' in output and '"service":"risk"' not in output
