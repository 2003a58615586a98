"""plan / apply: added, changed, updated, deprecated, removed; unsafe removals refused."""

from __future__ import annotations

import pytest

from headwater import Project
from headwater.project.planning import PlanRefused
from tests.conftest import SMALL_DEFINITIONS


def _actions(plan):
    return {(c.kind, c.name): c.action for c in plan.pending}


def test_first_apply_adds_everything_then_nothing_changes(small_project):
    with Project(small_project) as p:
        plan = p.plan()
        assert plan.summary() == {"added": 5}
        assert _actions(plan)[("feature", "spend")] == "added"
        p.apply(by="alice")
        assert p.plan().pending == []
        assert p.plan().summary() == {"unchanged": 5}
        (spend,) = p.metadata.history("feature", "spend")
        assert spend.meta["applied_by"] == "alice"  # who applied it, not a metadata change


def test_changing_meaning_makes_a_new_version_and_metadata_does_not(project_factory):
    folder = project_factory(SMALL_DEFINITIONS)
    with Project(folder) as p:
        p.apply()
        old = {d.name: d.version for d in p.metadata.definitions()}
    source = SMALL_DEFINITIONS.replace('windows=["1h", "7d", "lifetime"]', 'windows=["1h", "30d"]')
    source = source.replace('description="Clicks"),', 'description="Clicks on anything"),')
    (folder / "definitions.py").write_text(source)
    with Project(folder) as p:
        plan = p.plan()
        assert _actions(plan) == {("feature", "spend"): "changed", ("feature", "clicks"): "updated"}
        change = next(c for c in plan.pending if c.name == "spend")
        assert change.old_version == old["spend"] != change.new_version
        p.apply()
        assert [h.version for h in p.metadata.history("feature", "spend")] == [
            old["spend"],
            change.new_version,
        ]


def test_removing_an_active_feature_is_refused_until_deprecated(project_factory):
    folder = project_factory(SMALL_DEFINITIONS)
    with Project(folder) as p:
        p.apply()
    without = SMALL_DEFINITIONS.split('    Feature("clicks"')[0] + "]\n"
    (folder / "definitions.py").write_text(without)
    with Project(folder) as p:
        plan = p.plan()
        assert _actions(plan)[("feature", "clicks")] == "removed"
        assert "mark it deprecated" in plan.refused[0]
        with pytest.raises(PlanRefused, match="feature 'clicks' is registered and in use"):
            p.apply()
        assert any((d.kind, d.name) == ("feature", "clicks") for d in p.metadata.definitions())
    deprecated = SMALL_DEFINITIONS.replace(
        'description="Clicks"),', 'description="Clicks", deprecated=True),'
    )
    (folder / "definitions.py").write_text(deprecated)
    with Project(folder) as p:
        assert _actions(p.apply())[("feature", "clicks")] == "deprecated"
    (folder / "definitions.py").write_text(without)
    with Project(folder) as p:
        assert p.plan().refused == []
        p.apply()
        assert not any((d.kind, d.name) == ("feature", "clicks") for d in p.metadata.definitions())


def test_a_definition_without_owner_stops_the_project_from_loading(project_factory):
    from headwater import DefinitionError

    folder = project_factory(SMALL_DEFINITIONS.replace('owner="web", description="Clicks",', ""))
    with pytest.raises(DefinitionError, match="stream 'clicks' has no owner"):
        Project(folder)
