"""Loaded model versions and fast single-row scoring, swapped atomically on promotion."""

from __future__ import annotations

import ctypes
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from headwater.definitions import HeadwaterError, Model
from headwater.registry import artifacts
from headwater.registry.registry import Registry


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
    single: SingleRowPredictor | None = None  # LightGBM's single-row C path, when available

    def score(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Scores: the positive-class probability for classifiers, the value for regressors.

        LightGBM versions skip pandas: a float matrix (categories as their codes) goes
        straight to the booster on one thread, ~30x faster for a single row. Tests check the
        fast path equals the estimator's own ``predict_proba`` on the same rows.
        """
        if self.booster is not None:
            if len(rows) == 1 and self.single is not None:
                return self.single.predict_values(self.vector(rows[0]))
            return np.asarray(self.booster.predict(self.matrix(rows), num_threads=1))
        frame = self.signature.matrix(pd.DataFrame(rows, columns=self.signature.features))
        if self.signature.task == "classification":
            return np.asarray(self.estimator.predict_proba(frame))[:, -1]
        return np.asarray(self.estimator.predict(frame), dtype=float)

    def vector(self, row: dict[str, Any]) -> list[float]:
        """One row as the booster's floats (categories as their codes): ``matrix`` of one
        row, without the array."""
        codes = self.codes
        return [
            (codes[name].get(value, math.nan) if value is not None else math.nan)
            if name in codes
            else (math.nan if value is None else float(value))
            for name in self.signature.features
            for value in (row.get(name),)
        ]

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


class SingleRowPredictor:
    """One row through LightGBM's ``PredictForMatSingleRowFast`` C API: the booster's
    prediction setup is done once instead of per call (~20 us a row instead of ~50 us).

    A fast config is not safe to share between threads, so calls take a lock (uncontended
    on the event loop; shadow, batch and stream scoring threads just wait their turn).
    """

    def __init__(self, booster: Any, n_features: int) -> None:
        from lightgbm.basic import _LIB, _c_str, _safe_call

        self._lib, self._check = _LIB, _safe_call
        self._config = ctypes.c_void_p()
        normal, float64 = 0, 1  # C_API_PREDICT_NORMAL, C_API_DTYPE_FLOAT64
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(normal),
                ctypes.c_int(0),
                ctypes.c_int(-1),
                ctypes.c_int(float64),
                ctypes.c_int32(n_features),
                _c_str("num_threads=1"),
                ctypes.byref(self._config),
            )
        )
        self._out = np.zeros(1, dtype=np.float64)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_len = ctypes.c_int64(0)
        self._out_len_ref = ctypes.byref(self._out_len)
        # the row is written into one buffer whose address is worked out once
        self._in = (ctypes.c_double * n_features)()
        self._in_ptr = ctypes.cast(self._in, ctypes.c_void_p)
        self._call = _LIB.LGBM_BoosterPredictForMatSingleRowFast
        self._lock = threading.Lock()

    def predict(self, row: np.ndarray) -> np.ndarray:
        return self.predict_values(np.ascontiguousarray(row, dtype=np.float64).tolist())

    def predict_values(self, row: list[float]) -> np.ndarray:
        """The score of one row given as floats (NaN for missing values)."""
        with self._lock:
            self._in[:] = row  # type: ignore[assignment]  # ctypes takes the floats
            self._check(self._call(self._config, self._in_ptr, self._out_len_ref, self._out_ptr))
            return self._out.copy()

    def __del__(self) -> None:
        config = getattr(self, "_config", None)
        if config is not None and config.value:
            self._lib.LGBM_FastConfigFree(config)


def _single_row(booster: Any, n_features: int) -> SingleRowPredictor | None:
    """The single-row path for one-output boosters (binary or regression), else None."""
    if booster is None or booster.num_model_per_iteration() != 1:
        return None
    try:
        return SingleRowPredictor(booster, n_features)
    except Exception:  # noqa: BLE001 - an older LightGBM without the API: the general path
        return None


def load_scorer(registry: Registry, model: str, alias: str) -> Scorer:
    version = registry.alias(model, alias) if not alias.isdigit() else int(alias)
    if version is None:
        raise NoModelVersion(
            f"model {model!r} has no {alias!r} version; train it and run "
            f"`headwater models promote {model} VERSION --alias {alias}`"
        )
    doc = registry.version(model, version)
    estimator, signature = registry.load_model(doc)
    booster = getattr(estimator, "booster_", None)
    codes = {
        name: {v: float(i) for i, v in enumerate(values)}
        for name, values in signature.categories.items()
    }
    single = _single_row(booster, len(signature.features))
    return Scorer(model, int(version), signature, estimator, booster, codes, single)


class ScorerCache:
    """The loaded version of each (model, alias). A background thread re-reads every alias
    served here every ``refresh_seconds``, in one keyed read whatever the number of models,
    and swaps in newly promoted versions: requests never wait for the registry."""

    def __init__(self, registry: Registry, refresh_seconds: float = 1.0) -> None:
        self._registry, self._refresh = registry, refresh_seconds
        self._scorers: dict[tuple[str, str], Scorer] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self.refresh_errors = 0

    def get(self, model: Model, alias: str) -> Scorer:
        key = (model.name, alias)
        scorer = self._scorers.get(key)
        if scorer is None:
            with self._lock:
                scorer = self._scorers.get(key)
                if scorer is None:
                    scorer = self._scorers[key] = load_scorer(self._registry, model.name, alias)
                if self._refresher is None and not self._stop.is_set():
                    self._refresher = threading.Thread(
                        target=self._refresh_loop, name="alias-refresh", daemon=True
                    )
                    self._refresher.start()
        return scorer

    def refresh(self) -> None:
        """Swap in the versions the aliases point at now (the refresher calls it)."""
        current = dict(self._scorers)
        named = [key for key in current if not key[1].isdigit()]
        if not named:
            return
        pointed = self._registry.alias_versions(named)
        for key in named:
            version = pointed.get(key)
            if version is not None and version != current[key].version:
                swapped = load_scorer(self._registry, *key)
                with self._lock:
                    self._scorers[key] = swapped

    def close(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=10)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._refresh):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a registry hiccup: keep serving, try again
                self.refresh_errors += 1
