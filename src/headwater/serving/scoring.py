"""Loaded model versions and fast single-row scoring, swapped atomically on promotion."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from headwater.definitions import HeadwaterError, Model
from headwater.training import artifacts
from headwater.training.registry import Registry


class NoModelVersion(HeadwaterError, LookupError):
    """A service variant's alias points at no registered version."""


@dataclass(frozen=True)
class Scorer:
    """A loaded model version that scores rows of raw feature values."""

    model: str
    version: int
    signature: artifacts.Signature
    estimator: Any
    booster: Any  # LightGBM's booster, for the fast path; None for other estimators
    codes: dict[str, dict[Any, float]]  # category -> code, as LightGBM saw them in training

    def score(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Scores: the positive-class probability for classifiers, the value for regressors.

        LightGBM versions skip pandas: a float matrix (categories as their codes) goes
        straight to the booster on one thread, ~30x faster for a single row. Tests check the
        fast path equals the estimator's own ``predict_proba`` on the same rows.
        """
        if self.booster is not None:
            return np.asarray(self.booster.predict(self.matrix(rows), num_threads=1))
        frame = self.signature.matrix(pd.DataFrame(rows, columns=self.signature.features))
        if self.signature.task == "classification":
            return np.asarray(self.estimator.predict_proba(frame))[:, -1]
        return np.asarray(self.estimator.predict(frame), dtype=float)

    def matrix(self, rows: list[dict[str, Any]]) -> np.ndarray:
        sig, codes = self.signature, self.codes
        out = np.empty((len(rows), len(sig.features)), dtype=float)
        for i, row in enumerate(rows):
            for j, name in enumerate(sig.features):
                value = row.get(name)
                if name in codes:
                    out[i, j] = codes[name].get(value, math.nan) if value is not None else math.nan
                else:
                    out[i, j] = math.nan if value is None else float(value)
        return out


def load_scorer(registry: Registry, model: str, alias: str) -> Scorer:
    version = registry.alias(model, alias) if not alias.isdigit() else int(alias)
    if version is None:
        raise NoModelVersion(
            f"model {model!r} has no {alias!r} version; train it and run "
            f"`headwater models promote {model} VERSION --alias {alias}`"
        )
    doc = registry.version(model, version)
    estimator, signature = artifacts.load(doc["artifacts"])
    booster = getattr(estimator, "booster_", None)
    codes = {
        name: {v: float(i) for i, v in enumerate(values)}
        for name, values in signature.categories.items()
    }
    return Scorer(model, int(version), signature, estimator, booster, codes)


class ScorerCache:
    """The loaded version of each (model, alias); re-reads the aliases at most every
    ``refresh_seconds`` and swaps in newly promoted versions without blocking requests."""

    def __init__(self, registry: Registry, refresh_seconds: float = 1.0) -> None:
        self._registry, self._refresh = registry, refresh_seconds
        self._scorers: dict[tuple[str, str], Scorer] = {}
        self._checked = 0.0
        self._lock = threading.Lock()

    def get(self, model: Model, alias: str) -> Scorer:
        key = (model.name, alias)
        scorer = self._scorers.get(key)
        if scorer is None:
            with self._lock:
                scorer = self._scorers.get(key)
                if scorer is None:
                    scorer = self._scorers[key] = load_scorer(self._registry, model.name, alias)
        elif time.monotonic() - self._checked > self._refresh and self._lock.acquire(False):
            try:  # one request refreshes; the others keep serving the loaded versions
                self._checked = time.monotonic()
                self._swap_promoted(dict(self._scorers))
            finally:
                self._lock.release()
            scorer = self._scorers[key]
        return scorer

    def _swap_promoted(self, current: dict[tuple[str, str], Scorer]) -> None:
        for (name, alias), scorer in current.items():
            if alias.isdigit():
                continue
            version = self._registry.alias(name, alias)
            if version is not None and version != scorer.version:
                self._scorers[(name, alias)] = load_scorer(self._registry, name, alias)
