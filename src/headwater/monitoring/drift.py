"""Drift and data quality of a model's inputs and outputs against its version's reference profile.

Pure statistics: a monitor feeds in a window of current values and gets back, per column, what moved
by how much and whether that is worth a warning or an alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

Kind = Literal["numeric", "categorical", "empty"]
Level = Literal["ok", "warn", "alert", "insufficient"]
"""``insufficient``: fewer rows than ``Thresholds.min_sample``; measured, never alerted."""

# Share given to a bin or category that holds nothing, on either side, before PSI's logarithm and
# as chi-square's expected share: log(0) is undefined, and with 1e-4 one empty bin that now holds
# 10% still contributes 0.1 * ln(0.1 / 1e-4) ~ 0.69 to PSI, an alert on its own, as it should.
EPSILON = 1e-4
# Below this the reference's top-50 shares are taken to cover every category it saw.
_ROUNDING = 1e-12


@dataclass(frozen=True)
class Thresholds:
    """When a column's drift is worth a warning or an alert; every share is a fraction, not a %.

    Magnitudes (PSI, JS, null-rate change, out-of-range share) can alert. The p-values only warn:
    with thousands of rows a test finds shifts far too small to matter, so significance alone
    is not an alert.
    """

    psi_warn: float = 0.1
    """PSI above this warns (the usual "moderate shift")."""
    psi_alert: float = 0.25
    """PSI above this alerts (the usual "major shift")."""
    ks_pvalue: float = 0.01
    """Numeric: a two-sample Kolmogorov–Smirnov p-value below this warns."""
    null_rate_delta: float = 0.05
    """A null rate that moved more than this from the reference's, either way, alerts..."""
    null_rate_pvalue: float = 0.001
    """...when a two-proportion z-test also finds the change beyond chance (p below this):
    in a window of 300 rows a null rate near 50% wanders by 0.05 in one window of ten."""
    out_of_range_alert: float = 0.05
    """Numeric: more than this share of values outside the reference's [min, max] alerts."""
    js_alert: float = 0.1
    """Categorical: Jensen–Shannon divergence (squared distance, base 2, in [0, 1]) above this
    alerts, when the chi-square p-value is also below ``chi2_pvalue`` (a small window of many
    categories shows a divergence by chance alone)."""
    chi2_pvalue: float = 0.01
    """Categorical: a chi-square p-value (current counts vs reference shares) below this warns."""
    min_sample: int = 100
    """Below this many rows in the window a column is measured but neither warns nor alerts
    (level "insufficient", "not enough data: N of M rows"): two predictions give a PSI of 10
    by chance. ``[monitor] min_sample`` in ``headwater.toml``."""


@dataclass(frozen=True)
class ColumnDrift:
    """How one column of the current window compares with its reference; None: not applicable."""

    name: str
    kind: Kind
    """The reference's kind, or "empty" when either side has no values to compare."""
    n: int
    """Rows in the current window, nulls included."""
    psi: float | None
    ks_statistic: float | None
    ks_pvalue: float | None
    wasserstein: float | None
    """In the column's own units; no threshold, as it has no scale-free meaning."""
    chi2_pvalue: float | None
    js_divergence: float | None
    null_rate: float
    reference_null_rate: float
    out_of_range_rate: float | None
    """Share of the non-null current values outside the reference's [min, max]."""
    level: Level
    reasons: tuple[str, ...]
    """One plain sentence per threshold crossed, e.g. "PSI 0.31 > 0.25"."""


_NOT_COMPUTED: dict[str, float | None] = {
    "psi": None,
    "ks_statistic": None,
    "ks_pvalue": None,
    "wasserstein": None,
    "chi2_pvalue": None,
    "js_divergence": None,
    "out_of_range_rate": None,
}


def column_drift(
    name: str,
    reference: dict[str, Any],
    current: pd.Series,
    thresholds: Thresholds = Thresholds(),
) -> ColumnDrift:
    """Compare a column's current values with its reference profile (from `column_profile`).

    >>> from headwater.training.profile import column_profile
    >>> reference = column_profile(pd.Series(np.arange(1000.0)))
    >>> column_drift("x", reference, pd.Series(np.arange(1000.0))).level
    'ok'
    >>> column_drift("x", reference, pd.Series(np.arange(1000.0) + 500)).reasons[0]
    'PSI 4.35 > 0.25'
    >>> column_drift("x", reference, pd.Series([5000.0, 6000.0])).reasons
    ('not enough data: 2 of 100 rows',)
    """
    if reference.get("type") == "numeric":
        # what does not parse as a number is treated as missing, and shows in the null rate
        current = pd.to_numeric(current, errors="coerce")
    present = current.dropna()
    measures = dict(_NOT_COMPUTED)
    kind: Kind = "empty"
    if present.empty:
        pass  # nothing to compare but the null rate
    elif reference.get("type") == "numeric":
        kind = "numeric"
        measures.update(_numeric_drift(reference, present.to_numpy(dtype=float)))
    elif reference.get("type") == "categorical":
        kind = "categorical"
        measures.update(_categorical_drift(reference, present.astype(str)))
    n = len(current)
    null_rate = (n - len(present)) / n if n else 0.0
    reference_null_rate = float(reference.get("null_rate", 0.0))
    findings = _findings(
        measures, null_rate, reference_null_rate, thresholds, n, float(reference.get("count", 0))
    )
    levels = {level for level, _ in findings}
    level: Level = "alert" if "alert" in levels else "warn" if levels else "ok"
    reasons = tuple(reason for _, reason in findings)
    if n < thresholds.min_sample:
        level, reasons = "insufficient", (f"not enough data: {n} of {thresholds.min_sample} rows",)
    return ColumnDrift(
        name=name,
        kind=kind,
        n=n,
        null_rate=null_rate,
        reference_null_rate=reference_null_rate,
        level=level,
        reasons=reasons,
        **measures,
    )


def profile_drift(
    reference_profile: dict[str, Any],
    current: pd.DataFrame,
    predictions: np.ndarray | None,
    thresholds: Thresholds = Thresholds(),
) -> list[ColumnDrift]:
    """Drift of every profiled feature present in `current`, then of the predictions if given.

    >>> from headwater.training.profile import reference_profile
    >>> frame = pd.DataFrame({"a": np.arange(100.0), "b": ["x", "y"] * 50})
    >>> profile = reference_profile(frame, np.linspace(0, 1, 100))
    >>> [(d.name, d.level) for d in profile_drift(profile, frame, np.linspace(0, 1, 100))]
    [('a', 'ok'), ('b', 'ok'), ('prediction', 'ok')]
    """
    drifts = [
        column_drift(name, reference, current[name], thresholds)
        for name, reference in reference_profile["features"].items()
        if name in current.columns
    ]
    if predictions is not None:
        outputs = pd.Series(np.asarray(predictions))
        drifts.append(
            column_drift("prediction", reference_profile["prediction"], outputs, thresholds)
        )
    return drifts


def _numeric_drift(reference: dict[str, Any], values: np.ndarray) -> dict[str, float | None]:
    expected = np.asarray(reference["shares"], dtype=float)
    edges = np.asarray(reference["edges"], dtype=float)
    # the bins of np.histogram ([a, b), the last [a, b]), with values beyond the edges counted
    # in the first or last bin so every value lands somewhere
    bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(expected) - 1)
    actual = np.bincount(bins, minlength=len(expected)) / len(values)
    outside = (values < reference["min"]) | (values > reference["max"])
    measures: dict[str, float | None] = {
        "psi": _psi(expected, actual),
        "out_of_range_rate": float(outside.mean()),
    }
    sample = reference.get("sample")
    if sample:  # profiles written before samples were kept have none
        ks = stats.ks_2samp(values, np.asarray(sample, dtype=float))
        measures["ks_statistic"] = float(ks.statistic)
        measures["ks_pvalue"] = float(ks.pvalue)
        measures["wasserstein"] = float(stats.wasserstein_distance(values, sample))
    return measures


def _categorical_drift(reference: dict[str, Any], values: pd.Series) -> dict[str, float | None]:
    """Reference categories plus one "other" bucket for everything outside them.

    "other" holds the categories the reference saw beyond its top 50 (its share is what those
    50 leave) and any category it never saw; it is left out when both sides have nothing there.
    """
    shares: dict[str, float] = reference["shares"]
    categories = list(shares)
    expected = np.array([shares[c] for c in categories], dtype=float)
    counts = values.value_counts()
    observed = np.array([counts.get(c, 0) for c in categories], dtype=float)
    expected_other = max(0.0, 1.0 - float(expected.sum()))
    observed_other = len(values) - float(observed.sum())
    if expected_other > _ROUNDING or observed_other > 0:
        expected = np.append(expected, expected_other)
        observed = np.append(observed, observed_other)
    expected /= expected.sum()
    actual = observed / observed.sum()
    reference_n = reference.get("count", 0) * (1.0 - reference.get("null_rate", 0.0))
    return {
        "psi": _psi(expected, actual),
        "js_divergence": float(distance.jensenshannon(expected, actual, base=2) ** 2),
        "chi2_pvalue": _chi2_pvalue(expected, observed, reference_n),
    }


def _chi2_pvalue(expected: np.ndarray, observed: np.ndarray, reference_n: float) -> float | None:
    """Chi-square p-value of the current counts against the reference shares.

    The shares were themselves estimated from `reference_n` values, so when that is known the
    test is two-sample (homogeneity of reference and current counts): a goodness-of-fit test
    taking the shares as exact flags identical distributions when both samples are of similar
    size (p ~ 1e-5 with 50 categories). Without it, goodness of fit, where an empty expected
    bucket (a new category) gets EPSILON so the statistic stays finite.
    """
    if len(expected) < 2:
        return None  # one bucket: nothing can differ
    if reference_n > 0:
        table = np.vstack([expected * reference_n, observed])
        return float(stats.chi2_contingency(table).pvalue)
    floored = np.maximum(expected, EPSILON)
    f_exp = floored / floored.sum() * observed.sum()
    return float(stats.chisquare(observed, f_exp=f_exp).pvalue)


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index, sum of (a - e) * ln(a / e), empty shares floored at EPSILON."""
    e = np.maximum(expected, EPSILON)
    a = np.maximum(actual, EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _two_proportion_pvalue(p1: float, n1: int, p0: float, n0: float) -> float:
    """Two-sided p-value of a pooled two-proportion z-test; with an unknown reference size,
    the reference rate is taken as exact (a one-sample test)."""
    if n1 <= 0:
        return 1.0
    if n0 > 0:
        pooled = (p1 * n1 + p0 * n0) / (n1 + n0)
        var = pooled * (1 - pooled) * (1 / n1 + 1 / n0)
    else:
        var = p0 * (1 - p0) / n1
    if var <= 0:
        return 0.0 if p1 != p0 else 1.0
    return float(2 * stats.norm.sf(abs(p1 - p0) / np.sqrt(var)))


def _findings(
    measures: dict[str, float | None],
    null_rate: float,
    reference_null_rate: float,
    t: Thresholds,
    n: int = 0,
    reference_n: float = 0,
) -> list[tuple[Level, str]]:
    """Each threshold crossed, as (level, the sentence that says by how much)."""
    found: list[tuple[Level, str]] = []
    psi = measures["psi"]
    if psi is not None and psi > t.psi_alert:
        found.append(("alert", f"PSI {psi:.3g} > {t.psi_alert:g}"))
    elif psi is not None and psi > t.psi_warn:
        found.append(("warn", f"PSI {psi:.3g} > {t.psi_warn:g}"))
    js, chi2 = measures["js_divergence"], measures["chi2_pvalue"]
    if js is not None and js > t.js_alert and (chi2 is None or chi2 < t.chi2_pvalue):
        found.append(("alert", f"Jensen-Shannon divergence {js:.3g} > {t.js_alert:g}"))
    out = measures["out_of_range_rate"]
    if out is not None and out > t.out_of_range_alert:
        limit = t.out_of_range_alert
        found.append(("alert", f"{out:.1%} of values outside the reference range > {limit:.1%}"))
    change = abs(null_rate - reference_null_rate)
    p_null = _two_proportion_pvalue(null_rate, n, reference_null_rate, reference_n)
    if change > t.null_rate_delta and p_null < t.null_rate_pvalue:
        found.append(
            (
                "alert",
                f"null rate {null_rate:.1%} vs {reference_null_rate:.1%} in the reference,"
                f" a change of {change:.1%} > {t.null_rate_delta:.1%} (p={p_null:.2g})",
            )
        )
    ks = measures["ks_pvalue"]
    if ks is not None and ks < t.ks_pvalue:
        found.append(("warn", f"KS test p-value {ks:.2g} < {t.ks_pvalue:g}"))
    if chi2 is not None and chi2 < t.chi2_pvalue:
        found.append(("warn", f"chi-square test p-value {chi2:.2g} < {t.chi2_pvalue:g}"))
    return found
