"""Reference profiles: the distribution of every feature and of the predictions, for monitoring."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

QUANTILES = [i / 10 for i in range(11)]


def column_profile(values: pd.Series) -> dict[str, Any]:
    """Null rate plus decile edges and bin shares (numeric) or top value shares (categorical)."""
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
    }


def reference_profile(features: pd.DataFrame, predictions: np.ndarray) -> dict[str, Any]:
    return {
        "features": {c: column_profile(features[c]) for c in features.columns},
        "prediction": column_profile(pd.Series(predictions)),
    }
