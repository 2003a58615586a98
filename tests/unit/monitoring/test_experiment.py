"""Experiment analysis: intervals, tests, verdicts and sample sizes against scipy and by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from headwater.monitoring.experiment import (
    ExperimentError,
    analyze,
    exposures,
    wilson_interval,
)


def binary_outcomes(counts: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """A frame with `successes` ones and `n - successes` zeros for each variant."""
    variants, outcomes = [], []
    for name, (successes, n) in counts.items():
        variants += [name] * n
        outcomes += [1] * successes + [0] * (n - successes)
    return pd.DataFrame({"variant": variants, "outcome": outcomes})


def two_proportion_sample_size(p1: float, p2: float, alpha: float, power: float) -> float:
    z_a, z_b = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    p_bar = (p1 + p2) / 2
    top = z_a * math.sqrt(2 * p_bar * (1 - p_bar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return top**2 / (p2 - p1) ** 2


def test_wilson_interval_matches_a_hand_computed_value():
    # 45/100 at 95%: centre (0.45 + z²/200) / (1 + z²/100), half-width z·√(p(1-p)/100 + z²/40000)/…
    low, high = wilson_interval(45, 100)
    assert low == pytest.approx(0.356145, abs=1e-6)
    assert high == pytest.approx(0.547554, abs=1e-6)
    oracle = stats.binomtest(45, 100).proportion_ci(0.95, method="wilson")
    assert (low, high) == pytest.approx((oracle.low, oracle.high), abs=1e-12)

    per_variant, _ = analyze(binary_outcomes({"a": (45, 100), "b": (50, 100)}))
    assert per_variant[0].kind == "binary"
    assert (per_variant[0].ci_low, per_variant[0].ci_high) == pytest.approx((low, high))


def test_a_clear_binary_win_names_the_treatment():
    per_variant, [cmp] = analyze(binary_outcomes({"a": (500, 5000), "b": (750, 5000)}))
    assert [(s.variant, s.n, s.mean) for s in per_variant] == [("a", 5000, 0.10), ("b", 5000, 0.15)]
    assert (cmp.control, cmp.treatment) == ("a", "b")
    assert cmp.test == "two-proportion z-test"
    assert cmp.verdict == "winner: b"
    assert cmp.samples_needed is None
    assert cmp.p_value < 0.001
    assert cmp.difference == pytest.approx(0.05)
    assert 0 < cmp.ci_low < cmp.difference < cmp.ci_high
    assert cmp.relative_lift == pytest.approx(0.5)
    # The pooled z statistic, by hand.
    pooled = 1250 / 10000
    z = 0.05 / math.sqrt(pooled * (1 - pooled) * (2 / 5000))
    assert cmp.p_value == pytest.approx(2 * stats.norm.sf(z), rel=1e-9)


def test_higher_is_better_false_flips_the_winner():
    outcomes = binary_outcomes({"a": (500, 5000), "b": (750, 5000)})
    _, [cmp] = analyze(outcomes, higher_is_better=False)
    assert cmp.verdict == "winner: a"
    assert cmp.difference == pytest.approx(0.05)  # still treatment − control


def test_equal_rates_with_a_big_sample_mean_no_difference():
    _, [cmp] = analyze(binary_outcomes({"a": (4000, 20000), "b": (4000, 20000)}))
    assert cmp.verdict == "no difference"
    assert cmp.samples_needed is None
    assert cmp.p_value == pytest.approx(1.0)
    assert cmp.ci_low < 0 < cmp.ci_high
    # 20,000 per variant is enough to see a 10% relative lift on 0.20 at 80% power.
    assert two_proportion_sample_size(0.20, 0.22, 0.05, 0.8) < 20000


def test_a_small_sample_asks_for_the_formulas_number_of_samples():
    _, [cmp] = analyze(binary_outcomes({"a": (10, 100), "b": (12, 100)}))
    needed = two_proportion_sample_size(0.10, 0.11, 0.05, 0.8)  # default MDE: 10% of 0.10
    assert cmp.samples_needed is not None
    assert abs(cmp.samples_needed - needed) <= 1
    more = cmp.samples_needed - 100
    assert more > 0
    assert cmp.verdict == f"need {more} more samples per variant"


def test_an_explicit_minimum_detectable_effect_and_power_change_the_sample_needed():
    outcomes = binary_outcomes({"a": (10, 100), "b": (12, 100)})
    _, [cmp] = analyze(outcomes, min_detectable_effect=0.05, power=0.9, alpha=0.01)
    needed = two_proportion_sample_size(0.10, 0.15, 0.01, 0.9)
    assert cmp.samples_needed is not None
    assert abs(cmp.samples_needed - needed) <= 1
    assert cmp.verdict == f"need {cmp.samples_needed - 100} more samples per variant"


def test_continuous_outcomes_use_welchs_t_test():
    rng = np.random.default_rng(7)
    control = rng.normal(10.0, 2.0, size=80)
    treatment = rng.normal(10.6, 4.0, size=120)
    outcomes = pd.DataFrame(
        {"arm": ["control"] * 80 + ["new"] * 120, "spend": np.concatenate([control, treatment])}
    )
    per_variant, [cmp] = analyze(outcomes, variant_col="arm", outcome_col="spend")
    expected = stats.ttest_ind(treatment, control, equal_var=False)
    assert cmp.test == "Welch's t-test"
    assert cmp.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    interval = expected.confidence_interval(0.95)
    assert (cmp.ci_low, cmp.ci_high) == pytest.approx((interval.low, interval.high))
    assert cmp.difference == pytest.approx(treatment.mean() - control.mean())

    stats_control = per_variant[0]
    assert (stats_control.variant, stats_control.kind) == ("control", "continuous")
    t_low, t_high = stats.t.interval(0.95, 79, control.mean(), stats.sem(control))
    assert (stats_control.ci_low, stats_control.ci_high) == pytest.approx((t_low, t_high))


def test_continuous_sample_size_uses_the_pooled_variance():
    rng = np.random.default_rng(3)
    control, treatment = rng.normal(5.0, 1.0, size=40), rng.normal(5.0, 1.5, size=60)
    outcomes = pd.DataFrame(
        {"variant": ["a"] * 40 + ["b"] * 60, "outcome": np.concatenate([control, treatment])}
    )
    _, [cmp] = analyze(outcomes, min_detectable_effect=0.25)
    assert cmp.p_value >= 0.05
    pooled = (39 * control.var(ddof=1) + 59 * treatment.var(ddof=1)) / 98
    needed = 2 * pooled * (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) ** 2 / 0.25**2
    assert cmp.samples_needed is not None
    assert abs(cmp.samples_needed - needed) <= 1
    assert cmp.verdict == f"need {cmp.samples_needed - 40} more samples per variant"


def test_the_test_rejects_about_alpha_of_null_experiments():
    # Welch's p-value is scipy's (checked above); the z-test is composed here, so calibrate it.
    rng = np.random.default_rng(2024)
    n, rejections = 300, 0
    variants = np.repeat(["a", "b"], n)
    for _ in range(400):
        outcomes = pd.DataFrame({"variant": variants, "outcome": rng.binomial(1, 0.3, size=2 * n)})
        _, [cmp] = analyze(outcomes)
        rejections += cmp.p_value < 0.05
    assert 0.02 * 400 <= rejections <= 0.08 * 400


@pytest.mark.parametrize(
    ("variants", "expected"),
    [
        (["b", "champion", "a"], "champion"),
        (["treatment", "Control", "a"], "Control"),
        (["z", "A"], "A"),
        (["v2", "v1", "v3"], "v1"),
    ],
)
def test_the_default_control_follows_the_documented_rule(variants, expected):
    outcomes = binary_outcomes({v: (10 + i, 100) for i, v in enumerate(variants)})
    per_variant, comparisons = analyze(outcomes)
    assert [s.variant for s in per_variant] == sorted(variants)
    assert {c.control for c in comparisons} == {expected}
    assert sorted(c.treatment for c in comparisons) == sorted(set(variants) - {expected})


def test_an_explicit_control_is_used_and_must_exist():
    outcomes = binary_outcomes({"a": (500, 5000), "b": (750, 5000)})
    _, [cmp] = analyze(outcomes, control="b")
    assert (cmp.control, cmp.treatment, cmp.verdict) == ("b", "a", "winner: b")
    assert cmp.difference == pytest.approx(-0.05)
    with pytest.raises(ExperimentError, match="control 'c' is not a variant"):
        analyze(outcomes, control="c")


def test_missing_outcomes_are_dropped_and_bad_input_is_refused():
    outcomes = binary_outcomes({"a": (10, 100), "b": (12, 100)})
    with_gaps = pd.concat([outcomes, pd.DataFrame({"variant": ["a"], "outcome": [np.nan]})])
    per_variant, _ = analyze(with_gaps)
    assert per_variant[0].n == 100
    with pytest.raises(ExperimentError, match="at least two variants"):
        analyze(outcomes[outcomes["variant"] == "a"])
    with pytest.raises(ExperimentError, match="found none"):  # no outcome at all yet
        analyze(outcomes.iloc[:0])
    with pytest.raises(ExperimentError, match="no column"):
        analyze(outcomes, outcome_col="converted")
    with pytest.raises(ExperimentError, match="alpha"):
        analyze(outcomes, alpha=1.5)


def test_exposures_count_shown_predictions_per_entity_and_variant():
    predictions = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2", "u2", "u3", "u1"],
            "store_id": ["s1", "s1", "s1", "s1", "s1", "s2", "s2"],
            "variant": ["a", "a", "b", "b", "b", "a", "a"],
            "shadow": [False, False, True, False, True, True, False],
        }
    )
    got = exposures(predictions, ["user_id", "store_id"])
    assert got.to_dict("records") == [
        {"user_id": "u1", "store_id": "s1", "exposures": 2, "exposures_a": 2, "exposures_b": 0},
        {"user_id": "u1", "store_id": "s2", "exposures": 1, "exposures_a": 1, "exposures_b": 0},
        {"user_id": "u2", "store_id": "s1", "exposures": 1, "exposures_a": 0, "exposures_b": 1},
    ]
    assert (got["exposures"] == got["exposures_a"] + got["exposures_b"]).all()


def test_exposures_without_shown_rows_or_columns():
    only_shadows = pd.DataFrame({"user_id": ["u1"], "variant": ["b"], "shadow": [True]})
    assert list(exposures(only_shadows, ["user_id"]).columns) == ["user_id", "exposures"]
    assert exposures(only_shadows, ["user_id"]).empty
    with pytest.raises(ExperimentError, match="no column"):
        exposures(only_shadows, ["store_id"])
