"""Drift statistics against reference profiles, checked on data whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from headwater.monitoring.drift import EPSILON, Thresholds, column_drift, profile_drift
from headwater.training.profile import column_profile, reference_profile

ANY_SIZE = Thresholds(min_sample=1)  # the rules below the default minimum sample

N = 20_000


def normal(seed: int, n: int = N, mean: float = 0.0) -> pd.Series:
    return pd.Series(np.random.default_rng(seed).normal(mean, 1.0, n))


def categories(seed: int, shares: dict[str, float], n: int = N) -> pd.Series:
    rng = np.random.default_rng(seed)
    return pd.Series(rng.choice(list(shares), size=n, p=list(shares.values())))


# numeric


def test_the_same_distribution_is_ok():
    drift = column_drift("x", column_profile(normal(1)), normal(2))
    assert drift.kind == "numeric"
    assert drift.n == N
    assert drift.psi is not None and drift.psi < 0.02
    assert drift.ks_pvalue is not None and drift.ks_pvalue > 0.01
    assert drift.level == "ok"
    assert drift.reasons == ()


def test_a_shift_of_one_standard_deviation_alerts_on_psi_and_ks():
    drift = column_drift("x", column_profile(normal(1)), normal(2, mean=1.0))
    assert drift.level == "alert"
    assert drift.psi is not None and drift.psi > 0.25
    assert drift.ks_pvalue is not None and drift.ks_pvalue < 0.001
    assert drift.ks_statistic is not None and 0.3 < drift.ks_statistic < 0.45  # Phi(.5)-Phi(-.5)
    assert drift.reasons[0] == f"PSI {drift.psi:.3g} > 0.25"
    assert any(r.startswith("KS test p-value") for r in drift.reasons)


def test_a_moderate_shift_warns():
    drift = column_drift("x", column_profile(normal(1)), normal(2, mean=0.4))
    assert drift.psi is not None and 0.1 < drift.psi < 0.25
    assert drift.level == "warn"
    assert drift.reasons[0] == f"PSI {drift.psi:.3g} > 0.1"


def test_thresholds_are_the_callers_to_set():
    reference, current = column_profile(normal(1)), normal(2, mean=0.4)
    lenient = Thresholds(psi_warn=0.5, psi_alert=1.0, ks_pvalue=0.0)
    assert column_drift("x", reference, current, lenient).level == "ok"


def test_wasserstein_from_the_profile_sample_matches_scipy_on_the_raw_data():
    raw = normal(1)
    current = normal(2, mean=0.3)
    reference = column_profile(raw)
    drift = column_drift("x", reference, current)
    exact = stats.wasserstein_distance(current, raw)
    # The sample stands in for the raw data, so by the triangle inequality the two distances
    # differ by at most W1(sample, raw): each of the 1,000 order statistics speaks for 20 raw
    # values, about 1e-3 standard deviations here, so well under 0.01.
    bound = stats.wasserstein_distance(reference["sample"], raw)
    assert bound < 0.01
    assert drift.wasserstein is not None
    assert abs(drift.wasserstein - exact) <= bound + 1e-12
    assert drift.wasserstein == pytest.approx(0.3, abs=0.03)  # a pure shift moves W1 by it


def test_psi_puts_values_beyond_the_edges_in_the_outer_bins_and_floors_empty_ones():
    reference = column_profile(pd.Series(np.arange(100.0)))
    assert reference["shares"] == pytest.approx([0.1] * 10)
    current = pd.Series([-5.0] * 50 + [200.0] * 50)  # all below min or above max
    drift = column_drift("x", reference, current)
    # first and last bin: 0.5 each; the eight between: empty, so EPSILON
    expected = 2 * (0.5 - 0.1) * np.log(0.5 / 0.1) + 8 * (EPSILON - 0.1) * np.log(EPSILON / 0.1)
    assert drift.psi == pytest.approx(expected, rel=1e-12)


def test_out_of_range_rate_is_the_share_of_present_values_outside_min_max():
    reference = column_profile(pd.Series(np.linspace(0.0, 100.0, 101)))
    current = pd.Series([-1.0, 0.0, 50.0, 100.0, 101.0, 150.0, 50.0, 50.0, None, None])
    drift = column_drift("x", reference, current, ANY_SIZE)
    assert drift.out_of_range_rate == 3 / 8  # -1, 101 and 150; the bounds are in range
    assert drift.level == "alert"
    assert "37.5% of values outside the reference range > 5.0%" in drift.reasons


def test_a_null_rate_jump_alerts_and_a_small_change_does_not():
    values = normal(1)
    values[:200] = np.nan  # 1% nulls in the reference
    reference = column_profile(values)
    assert reference["null_rate"] == 0.01

    jumped = normal(2)
    jumped[:4_000] = np.nan  # 20%
    drift = column_drift("x", reference, jumped)
    assert drift.null_rate == 0.2
    assert drift.reference_null_rate == 0.01
    assert drift.level == "alert"
    assert drift.reasons == (
        "null rate 20.0% vs 1.0% in the reference, a change of 19.0% > 5.0% (p=0)",
    )

    nudged = normal(2)
    nudged[:600] = np.nan  # 3%
    assert column_drift("x", reference, nudged).level == "ok"


def test_a_null_rate_change_within_chance_does_not_alert_in_a_small_window():
    """Above the magnitude threshold is not enough: the change must be beyond chance."""
    rng = np.random.default_rng(5)
    values = rng.normal(size=20_000)
    values[rng.random(20_000) < 0.5] = np.nan  # half missing in the reference
    reference = column_profile(pd.Series(values))

    def window(n: int, nulls: int) -> np.ndarray:
        w = rng.normal(size=n)
        w[:nulls] = np.nan
        return pd.Series(w)

    small = column_drift("x", reference, window(300, 166))  # 55.3%: +5.3 points, p ~ 0.07
    assert abs(small.null_rate - small.reference_null_rate) > 0.05
    assert small.level != "alert"
    large = column_drift("x", reference, window(5_000, 2_765))  # the same change, p ~ 1e-12
    assert large.level == "alert" and "null rate" in large.reasons[0]


def test_values_that_are_not_numbers_count_as_missing():
    reference = column_profile(pd.Series(np.arange(100.0)))
    current = pd.Series(["1", "2", "three", "4"], dtype=object)
    drift = column_drift("x", reference, current, ANY_SIZE)
    assert drift.null_rate == 0.25
    assert drift.level == "alert"


def test_a_profile_without_a_sample_still_gives_psi():
    reference = column_profile(normal(1))
    del reference["sample"]  # as written before samples were kept
    drift = column_drift("x", reference, normal(2, mean=1.0))
    assert drift.ks_pvalue is None and drift.wasserstein is None
    assert drift.psi is not None and drift.psi > 0.25
    assert drift.level == "alert"


# categorical


def test_the_same_categories_are_ok():
    shares = {"a": 0.5, "b": 0.3, "c": 0.2}
    drift = column_drift("c", column_profile(categories(1, shares)), categories(2, shares))
    assert drift.kind == "categorical"
    assert drift.js_divergence is not None and drift.js_divergence < 0.001
    assert drift.chi2_pvalue is not None and drift.chi2_pvalue > 0.01
    assert drift.ks_pvalue is None and drift.out_of_range_rate is None
    assert drift.level == "ok"


def test_a_categorical_shift_alerts_on_js_and_chi_square():
    reference = column_profile(categories(1, {"a": 0.5, "b": 0.5}))
    drift = column_drift("c", reference, categories(2, {"a": 0.9, "b": 0.1}))
    assert drift.js_divergence is not None and drift.js_divergence > 0.1
    assert drift.js_divergence == pytest.approx(0.147, abs=0.01)  # JS(0.5/0.5, 0.9/0.1), bits
    assert drift.chi2_pvalue is not None and drift.chi2_pvalue < 0.01
    assert drift.psi is not None and drift.psi > 0.25
    assert drift.level == "alert"
    assert any(r.startswith("Jensen-Shannon divergence") for r in drift.reasons)


def test_unseen_categories_share_one_other_bucket():
    reference = {"type": "categorical", "null_rate": 0.0, "shares": {"a": 0.5, "b": 0.5}}
    two_new = pd.Series(["a"] * 45 + ["b"] * 45 + ["c"] * 5 + ["d"] * 5)
    one_new = pd.Series(["a"] * 45 + ["b"] * 45 + ["c"] * 10)
    drift = column_drift("c", reference, two_new)
    expected = distance.jensenshannon([0.5, 0.5, 0.0], [0.45, 0.45, 0.1], base=2) ** 2
    assert drift.js_divergence == pytest.approx(expected, rel=1e-12)
    assert drift == column_drift("c", reference, one_new)  # c and d are one bucket
    assert drift.chi2_pvalue is not None and drift.chi2_pvalue < 1e-6  # goodness of fit
    counted = column_drift("c", {**reference, "count": 1_000}, two_new)  # two-sample
    assert counted.chi2_pvalue is not None and counted.chi2_pvalue < 1e-6


def test_categories_beyond_the_profiles_top_50_are_other_on_both_sides():
    shares = {f"v{i}": 1 / 60 for i in range(60)}
    reference = column_profile(categories(1, shares))
    assert len(reference["shares"]) == 50
    drift = column_drift("c", reference, categories(2, shares))
    assert drift.js_divergence is not None and drift.js_divergence < 0.01
    assert drift.level == "ok"


def test_booleans_compare_as_categories():
    reference = column_profile(pd.Series([True, False] * 500))
    drift = column_drift("flag", reference, pd.Series([True] * 900 + [False] * 100))
    assert drift.kind == "categorical"
    assert drift.level == "alert"


# empty


def test_an_empty_window_is_empty_and_not_enough_data():
    drift = column_drift("x", column_profile(normal(1)), pd.Series([], dtype=float))
    assert drift.kind == "empty"
    assert drift.n == 0
    assert drift.psi is None and drift.ks_pvalue is None and drift.js_divergence is None
    assert drift.level == "insufficient"
    assert drift.reasons == ("not enough data: 0 of 100 rows",)
    no_minimum = Thresholds(min_sample=0)
    empty = pd.Series([], dtype=float)
    assert column_drift("x", column_profile(normal(1)), empty, no_minimum).level == "ok"


def test_a_window_below_the_minimum_sample_is_measured_but_never_alerts():
    reference = column_profile(normal(1))
    for n in (2, 99):
        tiny = column_drift("x", reference, pd.Series(np.full(n, 50.0)))  # 50 sigmas away
        assert tiny.psi is not None and tiny.psi > 5  # measured...
        assert tiny.level == "insufficient"  # ...but not alerted
        assert tiny.reasons == (f"not enough data: {n} of 100 rows",)
    enough = column_drift("x", reference, pd.Series(np.full(100, 50.0)))
    assert enough.level == "alert"
    assert column_drift("x", reference, pd.Series(np.full(99, 50.0)), ANY_SIZE).level == "alert"


def test_an_all_null_window_is_empty_and_alerts_on_the_null_rate():
    reference = column_profile(categories(1, {"a": 0.5, "b": 0.5}))
    drift = column_drift("c", reference, pd.Series([None] * 10, dtype=object), ANY_SIZE)
    assert drift.kind == "empty"
    assert drift.null_rate == 1.0
    assert drift.level == "alert"


def test_an_empty_reference_compares_only_null_rates():
    reference = column_profile(pd.Series([None] * 10, dtype=float))
    assert reference["type"] == "empty"
    drift = column_drift("x", reference, normal(2, n=100))
    assert drift.kind == "empty"
    assert drift.psi is None
    assert drift.level == "alert"  # from 100% null to none


# the profile's sample


def test_the_profile_sample_is_at_most_1000_sorted_values_spanning_the_data():
    values = normal(1, n=50_000)
    profile = column_profile(values)
    sample = profile["sample"]
    assert len(sample) == 1_000
    assert sample == sorted(sample)
    assert sample[0] == values.min() and sample[-1] == values.max()
    assert set(sample) <= set(values)  # raw values, not interpolated ones
    assert json.loads(json.dumps(profile)) == profile


def test_a_small_column_keeps_every_value_as_its_sample():
    values = pd.Series([3.0, 1.0, None, 2.0])
    assert column_profile(values)["sample"] == [1.0, 2.0, 3.0]


# whole profiles


def test_profile_drift_covers_present_features_and_the_predictions():
    rng = np.random.default_rng(1)
    train = pd.DataFrame(
        {
            "amount": rng.normal(0, 1, N),
            "device": rng.choice(["ios", "android"], N),
            "dropped": rng.normal(0, 1, N),
        }
    )
    profile = reference_profile(train, rng.uniform(0, 1, N))
    current = pd.DataFrame(
        {
            "amount": rng.normal(1, 1, N),  # shifted
            "device": rng.choice(["ios", "android"], N),
            "unprofiled": rng.normal(0, 1, N),
        }
    )
    drifts = profile_drift(profile, current, rng.uniform(0.5, 1, N))  # shifted outputs
    assert [(d.name, d.kind, d.level) for d in drifts] == [
        ("amount", "numeric", "alert"),
        ("device", "categorical", "ok"),
        ("prediction", "numeric", "alert"),
    ]
    assert [d.name for d in profile_drift(profile, current, None)] == ["amount", "device"]
