"""The LightGBM fast paths score exactly what the fitted estimator predicts."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd

from headwater.serving.scoring import SingleRowPredictor, load_scorer


def test_single_row_and_matrix_paths_equal_predict_proba(churn_project):
    p = churn_project
    p.process()
    version = p.train("churn_device").version
    scorer = load_scorer(p.registry, "churn_device", str(version))
    assert isinstance(scorer.single, SingleRowPredictor)  # the C single-row path is in use
    rows = [
        {"visits_1d": 0, "visits_7d": 3, "visits_30d": 9, "device_lifetime": "ios"},
        {"visits_1d": 2, "visits_7d": 2, "visits_30d": 2, "device_lifetime": "web"},
        {"visits_1d": None, "visits_7d": 0, "visits_30d": 1, "device_lifetime": None},
        {"visits_1d": 1, "visits_7d": 5, "visits_30d": 20, "device_lifetime": "tv"},  # unseen
    ]
    frame = scorer.signature.matrix(pd.DataFrame(rows, columns=scorer.signature.features))
    expected = scorer.estimator.predict_proba(frame)[:, 1]
    singles = [float(scorer.score([row])[0]) for row in rows]
    np.testing.assert_allclose(singles, expected, rtol=1e-12)
    np.testing.assert_allclose(scorer.score(rows), expected, rtol=1e-12)  # many rows at once


def test_the_single_row_path_is_safe_across_threads(churn_project):
    p = churn_project
    p.process()
    version = p.train("churn_device").version
    scorer = load_scorer(p.registry, "churn_device", str(version))
    rows = [
        {"visits_1d": i % 3, "visits_7d": i % 7, "visits_30d": i % 19, "device_lifetime": "ios"}
        for i in range(40)
    ]
    expected = [float(scorer.score([r])[0]) for r in rows]
    wrong: list[int] = []

    def hammer() -> None:
        for _ in range(25):
            for i, r in enumerate(rows):
                if float(scorer.score([r])[0]) != expected[i]:
                    wrong.append(i)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


def test_one_entity_at_a_time_answers_exactly_as_a_batch(churn_project):
    """The serving path for one entity (the single-row online read with its caches, the
    single-row LightGBM call) gives the same values and scores, to the bit, as the general
    path for many entities at once, cold and from the caches."""
    p = churn_project
    p.process()
    version = p.train("churn_device").version
    scorer = load_scorer(p.registry, "churn_device", str(version))
    names = scorer.signature.features
    rows = [{"user_id": f"u{i}"} for i in range(60)] + [{"user_id": "nobody"}]
    batch_values = p.online.get(rows, names)
    batch_scores = scorer.score(batch_values).tolist()
    assert len(set(batch_scores)) > 10  # users differ: the comparison means something
    for _ in ("cold", "cached"):
        values = [p.online.get([row], names)[0] for row in rows]
        assert values == batch_values
        assert [float(scorer.score([v])[0]) for v in values] == batch_scores
