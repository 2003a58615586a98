"""Reference profiles: the distribution of every feature and of the predictions, for monitoring."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

QUANTILES = [i / 10 for i in range(11)]
# Enough order statistics for KS and Wasserstein to be computed later without the training data:
# the sample's ECDF is within 1/SAMPLE_SIZE of the data's, at about 20 kB of JSON per feature.
SAMPLE_SIZE = 1_000


def column_profile(values: pd.Series) -> dict[str, Any]:
    """Null rate plus decile edges and bin shares (numeric) or top value shares (categorical).

    Numeric profiles also keep `sample`, at most SAMPLE_SIZE sorted raw values, for the KS and
    Wasserstein drift tests of `headwater.monitoring.drift`.
    """
    n = len(values)
    nulls = int(values.isna().sum())
    present = values.dropna()
    profile: dict[str, Any] = {"count": n, "null_rate": nulls / n if n else 0.0}
    if present.empty:
        return {**profile, "type": "empty"}
    if pd.api.types.is_bool_dtype(present) or not pd.api.types.is_numeric_dtype(present):
        shares = present.astype(str).value_counts(normalize=True).head(50)
        return {
            **profile,
            "type": "categorical",
            "shares": {str(k): float(v) for k, v in shares.items()},
        }
    numbers = present.astype(float).to_numpy()
    edges = np.unique(np.quantile(numbers, QUANTILES))
    counts, _ = np.histogram(numbers, bins=edges) if len(edges) > 1 else ([len(numbers)], None)
    return {
        **profile,
        "type": "numeric",
        "min": float(numbers.min()),
        "max": float(numbers.max()),
        "mean": float(numbers.mean()),
        "std": float(numbers.std()),
        "edges": [float(e) for e in edges],
        "shares": [float(c) / len(numbers) for c in counts],
        "sample": order_statistics_sample(numbers),
    }


def order_statistics_sample(numbers: np.ndarray, size: int = SAMPLE_SIZE) -> list[float]:
    """At most `size` evenly spaced order statistics: sorted raw values, min and max included.

    >>> order_statistics_sample(np.array([5.0, 1.0, 3.0, 2.0, 4.0]), size=3)
    [1.0, 3.0, 5.0]
    """
    ordered = np.sort(numbers)
    picks = np.round(np.linspace(0, len(ordered) - 1, min(len(ordered), size))).astype(int)
    return [float(v) for v in ordered[picks]]


def reference_profile(features: pd.DataFrame, predictions: np.ndarray) -> dict[str, Any]:
    return {
        "features": {c: column_profile(features[c]) for c in features.columns},
        "prediction": column_profile(pd.Series(predictions)),
    }
