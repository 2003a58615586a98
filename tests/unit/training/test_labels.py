"""Labels look only at [t, t + horizon); features only before t; immature rows never appear."""

from __future__ import annotations

import random
from datetime import timedelta

import numpy as np
import orjson
import pandas as pd

from headwater.history.labels import label_values, micros, sample_times
from tests.unit.training.conftest import NOW


def test_label_values_equal_a_brute_force_evaluation(churn_project):
    p = churn_project
    label = p.definitions.labels["churned_7d"]
    p.archiver.catch_up(p.definitions.streams["visits"])
    rnd = random.Random(5)
    spine = pd.DataFrame(
        {
            "user_id": [f"u{rnd.randrange(160)}" for _ in range(400)],
            "timestamp": pd.to_datetime(
                [NOW - timedelta(days=rnd.uniform(0, 40)) for _ in range(400)], utc=True
            ),
        }
    )
    times = micros(spine["timestamp"])
    got = label_values(p.training.engine, label, spine, times, None)
    events = [
        (r.event_time, orjson.loads(r.payload)["user_id"]) for r in p.log.read("visits", 0, 10**7)
    ]
    for i, (user, t) in enumerate(zip(spine["user_id"], times, strict=True)):
        n = sum(1 for ts, u in events if u == user and t <= ts < t + label.horizon_us)
        assert bool(got[i]) == (n == 0), (user, t)


def test_training_rows_have_mature_labels_and_no_feature_sees_the_future(churn_project):
    p = churn_project
    model = p.model("churn")
    times = sample_times(model, int(NOW.timestamp() * 1e6))
    assert times[-1] + model.label.horizon_us <= int(NOW.timestamp() * 1e6)
    assert len(times) == 14 and np.all(np.diff(times) == 86_400_000_000)
    result = p.train("churn")
    doc = p.registry.version("churn", result.version)
    assert doc["lineage"]["snapshot"]["sample_time_range_us"] == [times[0], times[-1]]
    # Rebuild one row's features from the raw events by hand: only events before t count.
    from headwater.project import wiring

    trainer = wiring.build_trainer(
        p.settings, p.definitions, p.catalog, p.stores, p.core, p.now, lambda _: None
    )
    frame = trainer._dataset(model, doc["lineage"]["snapshot"]["log"])["frame"]
    events = [
        (r.event_time, orjson.loads(r.payload)["user_id"]) for r in p.log.read("visits", 0, 10**7)
    ]
    for _, row in frame.sample(50, random_state=1).iterrows():
        t = int(row["timestamp"].value // 1000)
        start = ((t - 7 * 86_400_000_000) // 3_600_000_000) * 3_600_000_000
        expected = sum(1 for ts, u in events if u == row["user_id"] and start <= ts < t)
        assert row["visits_7d"] == expected
