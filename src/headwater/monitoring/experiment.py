"""Experiment analysis for A/B services: per-variant metrics, comparisons and a plain verdict.

Pure functions over pandas frames; the tests and intervals come from scipy.stats.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from headwater.errors import HeadwaterError

if TYPE_CHECKING:
    from headwater.definitions.training import Segment

Kind = Literal["binary", "continuous"]
Values = npt.NDArray[np.float64]

# A variant with one of these names (checked in this order, case-insensitively) is the control.
CONTROL_NAMES = ("control", "champion", "a")
BINARY_TEST = "two-proportion z-test"
CONTINUOUS_TEST = "Welch's t-test"
CLUSTERED_TEST = "t-test, errors clustered by entity"
DEFAULT_RELATIVE_MDE = 0.10


class ExperimentError(HeadwaterError, ValueError):
    """The outcomes or settings cannot be analysed as given; the message says what to change."""


@dataclass(frozen=True)
class VariantStats:
    """One variant's outcome metric: its mean with a (1 - alpha) confidence interval.

    Binary outcomes get a Wilson score interval, continuous ones a Student t interval.
    """

    variant: str
    n: int
    mean: float
    ci_low: float
    ci_high: float
    kind: Kind


@dataclass(frozen=True)
class Comparison:
    """A treatment against the control: difference (treatment − control), its test and verdict.

    `samples_needed` is the total sample per variant needed to detect the minimum detectable
    effect at the requested power; it is set only when the verdict asks for more samples, and
    the verdict's N is what remains: `samples_needed` minus the smaller of the two samples.
    """

    control: str
    treatment: str
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    relative_lift: float | None
    verdict: str
    samples_needed: int | None


@dataclass(frozen=True)
class _Design:
    alpha: float
    power: float
    min_detectable_effect: float | None
    higher_is_better: bool


def analyze(
    outcomes: pd.DataFrame,
    *,
    variant_col: str = "variant",
    outcome_col: str = "outcome",
    control: str | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    min_detectable_effect: float | None = None,
    higher_is_better: bool = True,
    cluster_col: str | None = None,
) -> tuple[list[VariantStats], list[Comparison]]:
    """Summarise each variant and compare every other variant with the control.

    ``cluster_col`` (e.g. the entity): outcomes of one cluster are not independent (sticky
    routing sends every request of an entity to one variant), so when a cluster holds more
    than one outcome, intervals and tests use standard errors clustered by it (CR1, Student's
    t on the clusters less one; the test's name says so), and the sample needed grows by the
    design effect.

    Outcomes that are all 0/1 are binary (two-proportion z-test, Wilson intervals); anything
    else is continuous (Welch's t-test, t intervals). Rows with a missing outcome are dropped.

    The control is `control` if given; otherwise the variant named "control", "champion" or
    "a" (in that order, ignoring case); otherwise the first variant in sorted order.

    Each comparison is tested on its own at `alpha` (no multiple-comparison correction). Verdict:

    - p < alpha: "winner: <variant>", the treatment if the difference points the better way
      (up when `higher_is_better`, down otherwise), else the control;
    - otherwise, if both variants already hold the sample needed to detect
      `min_detectable_effect` at `power`: "no difference";
    - otherwise "need N more samples per variant".

    `min_detectable_effect` is absolute, in outcome units; by default it is a 10% relative lift
    on the control mean (the observed difference when the control mean is 0). The sample needed
    uses the standard normal-approximation formulas: two proportions (pooled variance under the
    null) for binary outcomes, two means with the pooled variance for continuous ones.

    >>> df = pd.DataFrame({
    ...     "variant": ["a"] * 1000 + ["b"] * 1000,
    ...     "outcome": [1] * 100 + [0] * 900 + [1] * 150 + [0] * 850,
    ... })
    >>> per_variant, comparisons = analyze(df)
    >>> [(s.variant, s.n, s.mean) for s in per_variant]
    [('a', 1000, 0.1), ('b', 1000, 0.15)]
    >>> comparisons[0].test, comparisons[0].verdict
    ('two-proportion z-test', 'winner: b')
    """
    design = _Design(alpha, power, min_detectable_effect, higher_is_better)
    _check_design(design)
    groups = _groups(outcomes, variant_col, outcome_col)
    kind = _kind(list(groups.values()))
    chosen = _control(list(groups), control)
    per_variant = [_variant_stats(name, values, kind, alpha) for name, values in groups.items()]
    comparisons = [
        _compare(chosen, groups[chosen], name, values, kind, design)
        for name, values in groups.items()
        if name != chosen
    ]
    if cluster_col is not None:
        clusters = _cluster_groups(outcomes, variant_col, outcome_col, cluster_col)
        if any(np.bincount(codes).max() > 1 for _, codes in clusters.values()):
            per_variant, comparisons = _clustered(
                per_variant, comparisons, groups, clusters, kind, design
            )
    return per_variant, comparisons


def _cluster_groups(
    outcomes: pd.DataFrame, variant_col: str, outcome_col: str, cluster_col: str
) -> dict[str, tuple[Values, npt.NDArray[np.int64]]]:
    """Each variant's outcomes (in ``_groups``' order) with their cluster codes."""
    if cluster_col not in outcomes.columns:
        raise ExperimentError(f"outcomes have no cluster column {cluster_col!r}")
    frame = outcomes[[variant_col, outcome_col, cluster_col]].dropna(
        subset=[variant_col, outcome_col]
    )
    out = {}
    for name, part in frame.groupby(frame[variant_col].astype(str), sort=True):
        codes = pd.factorize(part[cluster_col].astype(str))[0].astype(np.int64)
        out[str(name)] = (part[outcome_col].to_numpy(dtype="float64"), codes)
    return out


def _cluster_se(values: Values, codes: npt.NDArray[np.int64]) -> float:
    """The standard error of a mean with errors clustered (CR1)."""
    n, count = values.size, int(codes.max()) + 1
    sums = np.bincount(codes, weights=values - values.mean(), minlength=count)
    scale = count / (count - 1) if count > 1 else 1.0
    return float(math.sqrt(scale * float((sums**2).sum())) / n)


def _clustered(
    per_variant: list[VariantStats],
    comparisons: list[Comparison],
    groups: dict[str, Values],
    clusters: dict[str, tuple[Values, npt.NDArray[np.int64]]],
    kind: Kind,
    design: _Design,
) -> tuple[list[VariantStats], list[Comparison]]:
    z = _z(1 - design.alpha / 2)
    se = {name: _cluster_se(*clusters[name]) for name in groups}
    stats_out = [
        VariantStats(
            v.variant, v.n, v.mean, v.mean - z * se[v.variant], v.mean + z * se[v.variant], v.kind
        )  # fmt: skip
        for v in per_variant
    ]
    out = []
    for c in comparisons:
        control, treatment = groups[c.control], groups[c.treatment]
        joint = math.sqrt(se[c.control] ** 2 + se[c.treatment] ** 2)
        naive = math.sqrt(
            float(control.var()) / control.size + float(treatment.var()) / treatment.size
        )
        # few clusters make clustered errors too small: Student's t on (clusters - 1) df
        dof = max(1, min(int(clusters[n][1].max()) + 1 for n in (c.control, c.treatment)) - 1)
        p_value = float(2 * stats.t.sf(abs(c.difference) / joint, dof)) if joint > 0 else 1.0
        zt = float(stats.t.ppf(1 - design.alpha / 2, dof))
        deff = max(1.0, (joint / naive) ** 2) if naive > 0 else 1.0
        verdict, needed = _verdict(
            c.control, control, c.treatment, treatment, kind, c.difference, p_value, design,
            deff,
        )  # fmt: skip
        out.append(
            Comparison(
                c.control,
                c.treatment,
                c.difference,
                c.difference - zt * joint,
                c.difference + zt * joint,
                p_value,
                CLUSTERED_TEST,
                c.relative_lift,
                verdict,
                needed,
            )  # fmt: skip
        )
    return stats_out, out


def exposures(predictions: pd.DataFrame, entity_cols: list[str]) -> pd.DataFrame:
    """Count how many times each entity was shown a result, in total and per variant.

    Shadow predictions (a true `shadow` column) were never shown and are not counted; without a
    `shadow` column every row counts. One row per entity: the entity columns, `exposures` (the
    total) and `exposures_<variant>` for each variant seen, zero where none.

    >>> log = pd.DataFrame({
    ...     "user_id": ["u1", "u1", "u1", "u2"],
    ...     "variant": ["a", "a", "b", "b"],
    ...     "shadow": [False, False, True, False],
    ... })
    >>> exposures(log, ["user_id"])
      user_id  exposures  exposures_a  exposures_b
    0      u1          2            2            0
    1      u2          1            0            1
    """
    if not entity_cols:
        raise ExperimentError("exposures needs at least one entity column, e.g. ['user_id']")
    missing = [c for c in [*entity_cols, "variant"] if c not in predictions.columns]
    if missing:
        raise ExperimentError(
            f"predictions have no column(s) {missing}; columns are {list(predictions.columns)}"
        )
    shown = predictions
    if "shadow" in predictions.columns:
        shown = predictions[~predictions["shadow"].eq(True)]
    if shown.empty:
        return pd.DataFrame(columns=[*entity_cols, "exposures"])
    counts = shown.groupby([*entity_cols, "variant"]).size().unstack("variant", fill_value=0)
    counts.columns = [f"exposures_{v}" for v in counts.columns]
    counts.insert(0, "exposures", counts.sum(axis=1))
    return counts.astype("int64").reset_index()


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """The Wilson score interval (no continuity correction) for a proportion.

    >>> tuple(round(x, 4) for x in wilson_interval(45, 100))
    (0.3561, 0.5476)
    """
    z = _z(1 - alpha / 2)
    p = successes / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    return centre - half, centre + half


def _check_design(design: _Design) -> None:
    if not 0 < design.alpha < 1:
        raise ExperimentError(f"alpha must be between 0 and 1, got {design.alpha}")
    if not 0 < design.power < 1:
        raise ExperimentError(f"power must be between 0 and 1, got {design.power}")
    mde = design.min_detectable_effect
    if mde is not None and not (math.isfinite(mde) and mde > 0):
        raise ExperimentError(f"min_detectable_effect must be a positive number, got {mde}")


def _groups(outcomes: pd.DataFrame, variant_col: str, outcome_col: str) -> dict[str, Values]:
    """The outcomes of each variant, keyed by variant name in sorted order."""
    missing = [c for c in (variant_col, outcome_col) if c not in outcomes.columns]
    if missing:
        raise ExperimentError(
            f"outcomes have no column(s) {missing}; pass variant_col=/outcome_col= "
            f"naming one of {list(outcomes.columns)}"
        )
    frame = outcomes[[variant_col, outcome_col]].dropna()
    try:
        values = frame[outcome_col].to_numpy(dtype="float64")
    except (TypeError, ValueError) as exc:
        raise ExperimentError(f"outcome column '{outcome_col}' must be numeric or 0/1") from exc
    if frame.empty:
        raise ExperimentError("an experiment needs at least two variants with outcomes; found none")
    names = frame[variant_col].astype(str).to_numpy(dtype=object)
    order = np.argsort(names, kind="stable")
    labels, starts = np.unique(names[order], return_index=True)
    groups = {
        str(name): part
        for name, part in zip(labels, np.split(values[order], starts[1:]), strict=True)
    }
    if len(groups) < 2:
        raise ExperimentError(
            f"an experiment needs at least two variants with outcomes; found {list(groups)}"
        )
    return groups


def _kind(arrays: list[Values]) -> Kind:
    binary = all(np.isin(a, (0.0, 1.0)).all() for a in arrays)
    if not binary and min(a.size for a in arrays) < 2:
        raise ExperimentError("continuous outcomes need at least two observations per variant")
    return "binary" if binary else "continuous"


def _control(names: list[str], control: str | None) -> str:
    if control is not None:
        if control not in names:
            raise ExperimentError(f"control '{control}' is not a variant; variants are {names}")
        return control
    by_lower = {n.lower(): n for n in names}
    for candidate in CONTROL_NAMES:
        if candidate in by_lower:
            return by_lower[candidate]
    return names[0]


def _variant_stats(name: str, values: Values, kind: Kind, alpha: float) -> VariantStats:
    n, mean = int(values.size), float(values.mean())
    if kind == "binary":
        low, high = wilson_interval(int(values.sum()), n, alpha)
    elif (sem := float(values.std(ddof=1)) / math.sqrt(n)) == 0:
        low, high = mean, mean
    else:
        low, high = (float(x) for x in stats.t.interval(1 - alpha, n - 1, mean, sem))
    return VariantStats(name, n, mean, low, high, kind)


@functools.lru_cache(maxsize=64)
def _z(quantile: float) -> float:
    """The standard normal quantile; cached, as a few settings are asked for again and again."""
    return float(stats.norm.ppf(quantile))


def _compare(
    control: str, c: Values, treatment: str, t: Values, kind: Kind, design: _Design
) -> Comparison:
    if kind == "binary":
        difference, low, high, p_value = _two_proportion_z(c, t, design.alpha)
    else:
        difference, low, high, p_value = _welch(c, t, design.alpha)
    control_mean = float(c.mean())
    lift = difference / control_mean if control_mean != 0 else None
    verdict, needed = _verdict(control, c, treatment, t, kind, difference, p_value, design)
    test = BINARY_TEST if kind == "binary" else CONTINUOUS_TEST
    return Comparison(
        control, treatment, difference, low, high, p_value, test, lift, verdict, needed
    )


def _two_proportion_z(c: Values, t: Values, alpha: float) -> tuple[float, float, float, float]:
    """Pooled-variance z-test of p_t = p_c; unpooled (Wald) interval for p_t - p_c."""
    n1, n2 = c.size, t.size
    p1, p2 = float(c.mean()), float(t.mean())
    difference = p2 - p1
    pooled = (float(c.sum()) + float(t.sum())) / (n1 + n2)
    se_null = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    # se_null is 0 only when every outcome in both variants is the same: no evidence either way.
    p_value = float(2 * stats.norm.sf(abs(difference) / se_null)) if se_null > 0 else 1.0
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    z = _z(1 - alpha / 2)
    return difference, difference - z * se, difference + z * se, p_value


def _welch(c: Values, t: Values, alpha: float) -> tuple[float, float, float, float]:
    difference = float(t.mean() - c.mean())
    if c.var() == 0 and t.var() == 0:  # scipy gives nan here; the means are known exactly
        return difference, difference, difference, 1.0 if difference == 0 else 0.0
    result = stats.ttest_ind(t, c, equal_var=False)
    interval = result.confidence_interval(1 - alpha)
    return difference, float(interval.low), float(interval.high), float(result.pvalue)


def _verdict(
    control: str,
    c: Values,
    treatment: str,
    t: Values,
    kind: Kind,
    difference: float,
    p_value: float,
    design: _Design,
    design_effect: float = 1.0,
) -> tuple[str, int | None]:
    if p_value < design.alpha:
        better = treatment if (difference > 0) == design.higher_is_better else control
        return f"winner: {better}", None
    needed = _samples_needed(c, t, kind, _effect(float(c.mean()), difference, design), design)
    needed = math.ceil(needed * design_effect)
    have = min(c.size, t.size)
    if have >= needed:
        return "no difference", None
    return f"need {needed - have} more samples per variant", needed


def _effect(control_mean: float, difference: float, design: _Design) -> float:
    if design.min_detectable_effect is not None:
        return design.min_detectable_effect
    effect = DEFAULT_RELATIVE_MDE * abs(control_mean) or abs(difference)
    if effect == 0:
        raise ExperimentError(
            "the control mean and the observed difference are both 0, so no default minimum "
            "detectable effect exists; pass min_detectable_effect= (absolute, in outcome units)"
        )
    return effect


def _samples_needed(c: Values, t: Values, kind: Kind, effect: float, design: _Design) -> int:
    """Sample per variant for a two-sided test at alpha to detect `effect` with `power`."""
    z_alpha = _z(1 - design.alpha / 2)
    z_beta = _z(design.power)
    if kind == "continuous":
        dof = c.size + t.size - 2
        pooled_var = ((c.size - 1) * c.var(ddof=1) + (t.size - 1) * t.var(ddof=1)) / dof
        return math.ceil(2 * float(pooled_var) * (z_alpha + z_beta) ** 2 / effect**2)
    p1 = float(c.mean())
    p2 = p1 + effect if p1 + effect <= 1 else p1 - effect
    if p2 < 0:
        raise ExperimentError(
            f"a minimum detectable effect of {effect} cannot occur from a rate of {p1:.3f}; "
            "pass a smaller min_detectable_effect"
        )
    p_bar = (p1 + p2) / 2
    spread = z_alpha * math.sqrt(2 * p_bar * (1 - p_bar))
    spread += z_beta * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(spread**2 / effect**2)


def allocation(logged: pd.DataFrame, day_us: int = 86_400_000_000) -> pd.DataFrame:
    """How a service's routing allocated its answered requests over time: per UTC day and
    variant (and model version), the decisions, their share of the day, and the mean logged
    propensity (the probability the routing gave that variant; None before it was logged).

    >>> frame = pd.DataFrame({"ts_us": [0, 1, 2, 86_400_000_000], "variant": list("aaba"),
    ...                       "model_version": [1, 1, 2, 1], "shadow": [False] * 4,
    ...                       "propensity": [0.6, 0.7, 0.3, 0.8]})
    >>> allocation(frame)[["day", "variant", "decisions", "share"]].values.tolist()
    [[0, 'a', 2, 0.6666666666666666], [0, 'b', 1, 0.3333333333333333], [1, 'a', 1, 1.0]]
    """
    columns = ["day", "variant", "model_version", "decisions", "share", "mean_propensity"]
    if logged.empty:
        return pd.DataFrame(columns=columns)
    frame = logged[~logged["shadow"].astype(bool)].copy()
    frame["day"] = frame["ts_us"].astype("int64") // day_us
    if "propensity" not in frame:
        frame["propensity"] = np.nan
    frame["propensity"] = pd.to_numeric(frame["propensity"], errors="coerce")
    out = (
        frame.groupby(["day", "variant", "model_version"])
        .agg(decisions=("variant", "size"), mean_propensity=("propensity", "mean"))
        .reset_index()
    )
    out["share"] = out["decisions"] / out.groupby("day")["decisions"].transform("sum")
    return out[columns].reset_index(drop=True)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control, in the given order).

    >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03, 0.5])]
    [0.04, 0.09, 0.09, 0.5]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def segment_verdicts(
    outcomes: pd.DataFrame,
    segments: Sequence[Segment],
    *,
    alpha: float = 0.05,
    higher_is_better: bool = True,
    cluster_col: str | None = "entity",
) -> list[dict[str, Any]]:
    """The experiment within each group of each segment (a column of ``outcomes`` named
    after it): every comparison's difference, interval and p-value, the p-value adjusted
    for all the comparisons made (Holm), and a verdict at ``alpha`` on the adjusted p-value:
    looking at many groups finds a "winner" somewhere by chance, which the correction
    prevents. Groups with fewer than two variants with outcomes are left out."""
    rows: list[dict[str, Any]] = []
    for seg in segments:
        if seg.name not in outcomes.columns:
            continue
        labels = np.array([seg.group(v) for v in outcomes[seg.name]], dtype=object)
        for group in seg.ordered(sorted(set(labels.tolist()))):
            part = outcomes[labels == group]
            try:
                _, comparisons = analyze(
                    part, alpha=alpha, higher_is_better=higher_is_better,
                    cluster_col=cluster_col if cluster_col in part.columns else None,
                )  # fmt: skip
            except ExperimentError:
                continue
            for c in comparisons:
                rows.append(
                    {
                        "segment": seg.name,
                        "group": group,
                        "n": len(part),
                        "control": c.control,
                        "treatment": c.treatment,
                        "difference": c.difference,
                        "ci_low": c.ci_low,
                        "ci_high": c.ci_high,
                        "p_value": c.p_value,
                        "test": c.test,
                    }  # fmt: skip
                )
    for row, adjusted in zip(rows, holm([r["p_value"] for r in rows]), strict=True):
        row["p_adjusted"] = adjusted
        if adjusted < alpha:
            up = row["difference"] > 0
            better = row["treatment"] if up == higher_is_better else row["control"]
            row["verdict"] = f"winner: {better}"
        else:
            row["verdict"] = "no significant difference"
    return rows
