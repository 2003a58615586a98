"""Loaded model versions and fast single-row scoring, swapped atomically on promotion."""

from __future__ import annotations

import ctypes
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from headwater.definitions import HeadwaterError, Model
from headwater.registry import artifacts
from headwater.registry.registry import Registry


class NoModelVersion(HeadwaterError, LookupError):
    """A service variant's alias points at no registered version."""


class ModelLoading(NoModelVersion):
    """The variant's model version is being loaded in the background (``serve --preload``):
    the service answers 503 with this reason until it is."""


@dataclass(frozen=True)
class LoadState:
    """Where one (model, alias) of a server stands.

    ``status``: ``loaded`` (in memory, answering), ``loading`` (a background load runs),
    ``registered`` (a version exists; it loads at the service's first call), ``missing`` (the
    alias points at no version) or ``failed`` (loading raised: ``reason``). ``seconds``: how
    long the load took, or has been running.
    """

    model: str
    alias: str
    status: str
    version: int | None = None
    reason: str | None = None
    seconds: float | None = None

    @property
    def ready(self) -> bool:
        return self.status in ("loaded", "registered")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "alias": self.alias, "status": self.status}
        if self.version is not None:
            out["version"] = self.version
        if self.reason is not None:
            out["reason"] = self.reason
        if self.seconds is not None:
            out["seconds"] = round(self.seconds, 3)
        return out


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
        raise NoModelVersion(_missing(model, alias))
    doc = registry.version(model, version)
    estimator, signature = registry.load_model(doc)
    booster = getattr(estimator, "booster_", None)
    codes = {
        name: {v: float(i) for i, v in enumerate(values)}
        for name, values in signature.categories.items()
    }
    single = _single_row(booster, len(signature.features))
    return Scorer(model, int(version), signature, estimator, booster, codes, single)


RETRY_FAILED_SECONDS = 30.0  # a preloaded version that failed to load is tried again after


class ScorerCache:
    """The loaded version of each (model, alias). A background thread re-reads every alias
    served here every ``refresh_seconds``, in one keyed read whatever the number of models,
    and swaps in newly promoted versions: requests never wait for the registry.

    ``preload`` loads versions in a background thread; until one is loaded, ``get`` raises
    ``ModelLoading`` instead of waiting. A preloaded alias with no version yet (or whose load
    failed) is retried by the refresher, so a service becomes ready when its model is
    promoted, without a restart. Anything else loads at its first ``get``.
    """

    def __init__(self, registry: Registry, refresh_seconds: float = 1.0) -> None:
        self._registry, self._refresh = registry, refresh_seconds
        self._scorers: dict[tuple[str, str], Scorer] = {}
        self._states: dict[tuple[str, str], LoadState] = {}  # what is not loaded, and why
        self._wanted: set[tuple[str, str]] = set()  # preloaded: retried until loaded
        self._loading: dict[tuple[str, str], float] = {}  # -> monotonic start of its load
        self._load_seconds: dict[tuple[str, str], float] = {}
        self._failed_at: dict[tuple[str, str], float] = {}  # a failed load is retried later
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._preloader: threading.Thread | None = None
        self._queue: list[tuple[str, str]] = []
        self.refresh_errors = 0

    def get(self, model: Model, alias: str) -> Scorer:
        key = (model.name, alias)
        scorer = self._scorers.get(key)
        if scorer is None:
            started = self._loading.get(key)
            if started is not None:
                raise ModelLoading(
                    f"model {model.name!r} {_named(alias)} is loading (for "
                    f"{time.monotonic() - started:.1f} s); retry shortly"
                )
            with self._lock:
                scorer = self._scorers.get(key)
                if scorer is None:
                    scorer = self._load(key)
                self._start_refresher()
        return scorer

    def preload(self, keys: Iterable[tuple[str, str]]) -> None:
        """Load these (model, alias) in a background thread, in order; returns at once.
        Already loaded or loading ones are skipped; calling it again is cheap."""
        with self._lock:
            fresh = [k for k in dict.fromkeys(keys) if k not in self._scorers]
            fresh = [k for k in fresh if k not in self._loading and k not in self._wanted]
            if not fresh:
                return
            now = time.monotonic()
            for key in fresh:
                self._wanted.add(key)
                self._loading[key] = now
            self._queue.extend(fresh)
            if self._preloader is None or not self._preloader.is_alive():
                self._preloader = threading.Thread(
                    target=self._preload_loop, name="model-preload", daemon=True
                )
                self._preloader.start()
            self._start_refresher()

    def states(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], LoadState]:
        """Where each (model, alias) stands, without loading anything: one keyed read of
        the registry for all those neither loaded nor loading."""
        out: dict[tuple[str, str], LoadState] = {}
        unknown: list[tuple[str, str]] = []
        now = time.monotonic()
        for key in dict.fromkeys(keys):
            scorer = self._scorers.get(key)
            started = self._loading.get(key)
            if scorer is not None:
                out[key] = LoadState(*key, "loaded", scorer.version,
                                     seconds=self._load_seconds.get(key))  # fmt: skip
            elif started is not None:
                out[key] = LoadState(*key, "loading", seconds=now - started)
            elif key in self._states and self._states[key].status == "failed":
                out[key] = self._states[key]
            else:
                unknown.append(key)
        named = [k for k in unknown if not k[1].isdigit()]
        pointed = self._registry.alias_versions(named) if named else {}
        for key in unknown:
            version = int(key[1]) if key[1].isdigit() else pointed.get(key)
            if version is None:
                out[key] = LoadState(*key, "missing", reason=_missing(*key))
            else:
                out[key] = LoadState(*key, "registered", version)
        return out

    def refresh(self) -> None:
        """Swap in the versions the aliases point at now, and load preloaded aliases that
        had no version before (the refresher calls it)."""
        current = dict(self._scorers)
        named = [key for key in current if not key[1].isdigit()]
        retry = [k for k in self._wanted if k not in current and k not in self._loading]
        asked = named + [k for k in retry if not k[1].isdigit()]
        pointed = self._registry.alias_versions(asked) if asked else {}
        for key in named:
            version = pointed.get(key)
            if version is not None and version != current[key].version:
                swapped = load_scorer(self._registry, *key)
                with self._lock:
                    self._scorers[key] = swapped
        now = time.monotonic()
        due = [
            k
            for k in retry
            if (k[1].isdigit() or pointed.get(k) is not None)
            and now - self._failed_at.get(k, -math.inf) >= RETRY_FAILED_SECONDS
        ]
        if due:
            with self._lock:
                self._wanted.difference_update(due)
            self.preload(due)

    def close(self) -> None:
        self._stop.set()
        for thread in (self._refresher, self._preloader):
            if thread is not None:
                thread.join(timeout=10)

    def _load(self, key: tuple[str, str]) -> Scorer:
        """Load one version now (a request under the lock, or the preloader), recording
        the outcome for ``states``."""
        started = time.monotonic()
        try:
            scorer = load_scorer(self._registry, *key)
        except NoModelVersion as exc:
            self._states[key] = LoadState(*key, "missing", reason=str(exc))
            raise
        except Exception as exc:
            self._states[key] = LoadState(*key, "failed", reason=f"{type(exc).__name__}: {exc}")
            self._failed_at[key] = time.monotonic()
            raise
        self._load_seconds[key] = time.monotonic() - started
        self._states.pop(key, None)
        self._scorers[key] = scorer
        return scorer

    def _preload_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if not self._queue:
                    self._preloader = None
                    return
                key = self._queue.pop(0)
            try:
                self._load(key)
            except Exception:  # noqa: BLE001 - recorded: reported on /readyz, retried
                pass
            finally:
                with self._lock:
                    self._loading.pop(key, None)

    def _start_refresher(self) -> None:  # under the lock
        if self._refresher is None and not self._stop.is_set():
            self._refresher = threading.Thread(
                target=self._refresh_loop, name="alias-refresh", daemon=True
            )
            self._refresher.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._refresh):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a registry hiccup: keep serving, try again
                self.refresh_errors += 1


def _named(alias: str) -> str:
    return f"version {alias}" if alias.isdigit() else f"alias {alias!r}"


def _missing(model: str, alias: str) -> str:
    if alias.isdigit():
        return f"model {model!r} has no version {alias}"
    return (
        f"model {model!r} has no {alias!r} version; train it and run "
        f"`headwater models promote {model} VERSION --alias {alias}`"
    )
