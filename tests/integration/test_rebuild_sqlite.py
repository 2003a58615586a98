"""``headwater process --rebuild`` on the embedded (SQLite) online store: lost or damaged
states come back from the log, value for value, and nothing else in the file is touched."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from headwater import Project
from tests.integration.test_rebuild_redis import empty, ingested_project, rebuild, values


def test_sqlite_states_lost_or_damaged_are_rebuilt_from_the_log(tmp_path):
    now = datetime.now(UTC)
    at = now + timedelta(minutes=1)
    folder = ingested_project(tmp_path / "p", None, now)
    with Project(folder) as p:
        assert p.process().events == 6000
        ids = [plan.id for plan in p.catalog.plans]
        # a checkpoint that is not the feature sets' (e.g. stream scoring's) stays put
        p.online_store.write({}, {"scoring:somewhere": 42})
    before = values(folder, at)
    assert sum(1 for row in before if row["clicks_1d"]) > 10

    db = sqlite3.connect(folder / ".headwater" / "online.db")
    with db:
        db.execute("DELETE FROM states")  # the checkpoints stay
    db.close()
    assert values(folder, at) == empty(folder, at) != before
    with Project(folder) as p:
        assert p.process().events == 0  # the checkpoints say all is done

    out = rebuild(folder)
    assert "processed 6000 events" in out
    assert values(folder, at) == before
    with Project(folder) as p:
        names = [*ids, "scoring:somewhere"]
        assert p.online_store.checkpoints(names) == {**dict.fromkeys(ids, 3000), names[-1]: 42}
