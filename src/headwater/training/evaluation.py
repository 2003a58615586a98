"""Metrics on held-out rows, calibration, and explanations (global and per prediction)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

if TYPE_CHECKING:
    from headwater.definitions.training import Segment


def predict_scores(estimator: Any, X: pd.DataFrame, task: str) -> np.ndarray:
    """Scores: the positive-class probability for classifiers, the prediction for regressors."""
    if task == "classification":
        proba = estimator.predict_proba(X)
        return np.asarray(proba)[:, -1]
    return np.asarray(estimator.predict(X), dtype=float)


def _at_k(y: np.ndarray, scores: np.ndarray, k: int) -> tuple[float, float]:
    k = max(1, min(k, len(y)))
    top = np.argsort(-scores, kind="stable")[:k]
    hits = float(y[top].sum())
    positives = float(y.sum())
    return hits / k, (hits / positives if positives else 0.0)


def calibration(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Reliability table: mean predicted vs observed rate per score decile bin."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    table = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            table.append(
                {
                    "bin": b,
                    "count": int(mask.sum()),
                    "predicted": float(scores[mask].mean()),
                    "observed": float(y[mask].mean()),
                }
            )
    return table


PROBABILITY_METRICS = ("log_loss", "brier", "ece")


def score_metrics(
    names: tuple[str, ...], y: np.ndarray, scores: np.ndarray, task: str, k: int
) -> dict[str, float]:
    """The metrics ``names`` (and ECE) of ``scores`` against ``y``. A classification score
    outside [0, 1] is a ranking, not a probability (a baseline heuristic, say): it gets the
    ranking metrics only (AUC, precision and recall at k), no log loss, Brier score or ECE.

    >>> y = np.array([0, 1, 0, 1])
    >>> heuristic = np.array([1.0, 7.0, 2.0, 5.0])
    >>> sorted(score_metrics(("auc", "log_loss"), y, heuristic, "classification", 2))
    ['auc']
    """
    out: dict[str, float] = {}
    if task == "classification":
        y = y.astype(int)
        both = len(np.unique(y)) == 2
        probability = bool(np.all((scores >= 0) & (scores <= 1)))
        precision, recall = _at_k(y, scores, k)
        values = {
            "auc": float(skm.roc_auc_score(y, scores)) if both else float("nan"),
            "precision_at_k": precision,
            "recall_at_k": recall,
        }
        if probability:
            clipped = np.clip(scores, 1e-7, 1 - 1e-7)
            values["log_loss"] = float(skm.log_loss(y, clipped, labels=[0, 1]))
            values["brier"] = float(skm.brier_score_loss(y, clipped))
            table = calibration(y, scores)
            n = sum(r["count"] for r in table)
            out["ece"] = sum(r["count"] * abs(r["predicted"] - r["observed"]) for r in table) / n
    else:
        values = {
            "rmse": float(np.sqrt(skm.mean_squared_error(y, scores))),
            "mae": float(skm.mean_absolute_error(y, scores)),
        }
    out.update({m: values[m] for m in names if m in values})
    return out


def _is_lightgbm(estimator: Any) -> bool:
    return type(estimator).__module__.startswith("lightgbm")


def contributions(estimator: Any, X: pd.DataFrame) -> pd.DataFrame | None:
    """Per-prediction contributions of each feature (LightGBM's own SHAP values), or None
    for estimators that do not provide them."""
    if not _is_lightgbm(estimator):
        return None
    values = np.asarray(estimator.predict(X, pred_contrib=True))
    if values.ndim == 2 and values.shape[1] == len(X.columns) + 1:
        return pd.DataFrame(values[:, :-1], columns=X.columns, index=X.index)
    return None


def global_importance(
    estimator: Any, X: pd.DataFrame, y: np.ndarray, task: str, seed: int = 0
) -> dict[str, float]:
    """Mean |contribution| for LightGBM; permutation importance for any other estimator."""
    contrib = contributions(estimator, X)
    if contrib is not None:
        return {c: float(v) for c, v in contrib.abs().mean().items()}
    from sklearn.inspection import permutation_importance

    sample = X.sample(min(len(X), 2000), random_state=seed)
    scoring = "roc_auc" if task == "classification" else "neg_root_mean_squared_error"
    result = permutation_importance(
        estimator,
        sample,
        y[X.index.get_indexer(sample.index)],
        scoring=scoring,
        n_repeats=3,
        random_state=seed,
    )
    return {c: float(v) for c, v in zip(X.columns, result.importances_mean, strict=True)}


def by_segment(
    segments: Sequence[Segment],
    columns: Mapping[str, Sequence[Any]],
    y: np.ndarray,
    scores: np.ndarray,
    task: str,
    metric: str,
    k: int,
) -> dict[str, Any]:
    """Each segment's groups on labelled rows (``columns``: each segment's value per row):
    rows, the metric, the observed and predicted positive rates (classification; the mean
    label and prediction for regression) and calibration (mean prediction minus mean
    label), and the largest gap of the metric between two groups of at least the segment's
    ``min_rows`` rows (None with fewer than two such groups, or where the metric is not
    defined, e.g. AUC of a group with one class).

    >>> from headwater.definitions.training import Segment
    >>> y, s = np.array([0, 1, 0, 1, 1, 0]), np.array([.1, .9, .2, .6, .2, .3])
    >>> out = by_segment([Segment("plan", min_rows=2)], {"plan": list("aaabbb")}, y, s,
    ...                  "classification", "auc", 2)
    >>> out["plan"]["groups"]["a"]["rows"], out["plan"]["gap"]["between"]
    (3, ['a', 'b'])
    """
    out: dict[str, Any] = {}
    for seg in segments:
        groups = np.array([seg.group(v) for v in columns[seg.name]], dtype=object)
        found: dict[str, Any] = {}
        for name in seg.ordered(list(set(groups.tolist()))):
            mask = groups == name
            gy, gs = y[mask], scores[mask]
            value: float | None
            try:
                value = score_metrics((metric,), gy, gs, task, k).get(metric)
            except ValueError:
                value = None
            if value is not None and np.isnan(value):
                value = None
            found[name] = {
                "rows": int(mask.sum()),
                metric: value,
                "positive_rate": float(gy.mean()),
                "predicted_rate": float(gs.mean()),
                "calibration": float(gs.mean() - gy.mean()),
            }
        eligible = {
            g: v[metric]
            for g, v in found.items()
            if v["rows"] >= seg.min_rows and v[metric] is not None
        }
        gap = None
        if len(eligible) >= 2:
            low = min(eligible, key=lambda g: eligible[g])
            high = max(eligible, key=lambda g: eligible[g])
            gap = {
                "metric": metric,
                "value": float(eligible[high] - eligible[low]),
                "between": sorted([low, high]),
            }
        out[seg.name] = {"metric": metric, "groups": found, "gap": gap, "min_rows": seg.min_rows}
    return out
