"""Sticky A/B analysis clusters by entity, and verdicts per segment are corrected for the
number of comparisons: both checked by their false-positive rates on simulations with no
true difference."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from headwater import Project, Segment
from headwater.monitoring.experiment import CLUSTERED_TEST, analyze, segment_verdicts
from tests.conftest import write_project
from tests.unit.monitoring.test_feedback import SERVICES
from tests.unit.training.conftest import NOW, visits


def _sticky(rng: np.random.Generator, entities: int = 200) -> pd.DataFrame:
    """No true difference between a and b; each entity has its own rate and 1-10 requests,
    all answered by its variant."""
    rows = []
    for e in range(entities):
        variant = "a" if rng.random() < 0.5 else "b"
        rate = rng.uniform(0.05, 0.95)
        region = f"r{e % 10}"
        for _ in range(rng.integers(1, 11)):
            rows.append((variant, float(rng.random() < rate), f"e{e}", region))
    return pd.DataFrame(rows, columns=["variant", "outcome", "entity", "region"])


def test_clustering_by_entity_keeps_the_false_positive_rate_at_alpha():
    rng = np.random.default_rng(21)
    clustered = naive = 0
    runs = 300
    for _ in range(runs):
        frame = _sticky(rng)
        (c,) = analyze(frame, cluster_col="entity")[1]
        (n,) = analyze(frame)[1]
        assert c.test == CLUSTERED_TEST and c.difference == n.difference
        clustered += c.p_value < 0.05
        naive += n.p_value < 0.05
    assert clustered / runs <= 0.09  # 5% expected
    assert naive / runs >= 0.15  # the per-request test finds "winners" that are not there


def test_per_segment_verdicts_are_corrected_for_the_number_of_comparisons():
    rng = np.random.default_rng(22)
    corrected = uncorrected = 0
    runs = 100
    for _ in range(runs):
        rows = segment_verdicts(_sticky(rng, 1000), [Segment("region")])
        assert len(rows) == 10 and {r["segment"] for r in rows} == {"region"}
        corrected += any(r["verdict"].startswith("winner") for r in rows)
        uncorrected += any(r["p_value"] < 0.05 for r in rows)
        assert all(r["p_adjusted"] >= r["p_value"] for r in rows)
    assert corrected / runs <= 0.12  # the family-wise error stays near 5%
    assert uncorrected / runs >= 0.25  # ten looks without correction: about 40%


def test_the_service_s_experiment_reports_segments_through_the_cli(tmp_path):
    from typer.testing import CliRunner

    from headwater.cli import app

    source = SERVICES.replace(
        'routing="ab", feedback=',
        'routing="ab", context=["region"], segments=["region"], feedback=',
    )
    folder = write_project(tmp_path / "p", source)
    with Project(folder, clock=lambda: NOW - timedelta(days=2)) as p:
        p.ingest("visits", visits())
        p.process()
        p.promote("churn", p.train("churn").version)
        rng = np.random.default_rng(7)
        events = []
        for round_ in range(2):
            rows = [
                {"user_id": f"u{i}", "region": "north" if i % 2 else "south"} for i in range(150)
            ]
            for s in p.serving.predict("offers", rows, "t"):
                at = NOW - timedelta(days=2) + timedelta(minutes=round_ + 1)
                converted = int(rng.random() < 0.3)
                events.append({"prediction_id": s.prediction_id, "converted": converted, "ts": at})
        p.ingest("offer_outcomes", events)
        p.serving.logger.flush()
        stats, comparisons = p.experiment("offers", days=3)
        assert comparisons[0].test == CLUSTERED_TEST  # every user asked twice
        rows = p.experiment_segments("offers", days=3)
        assert {r["group"] for r in rows} == {"north", "south"}
        assert sum(r["n"] for r in rows) == sum(s.n for s in stats)
    out = CliRunner().invoke(app, ["experiment", "offers", "--days", "4000", "-p", str(folder)])
    assert out.exit_code == 0, out.output
    assert "by segment (2 comparisons" in out.output and "allocation by day" in out.output
