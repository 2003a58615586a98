"""A model's hyperparameter search (``Model(search=Search(...))``), with Optuna.

The training rows are split once more in time: trials fit on all but the last
``validation_fraction`` of their sample times and are scored on those, so the held-out rows
of the evaluation are never seen by the search. Every trial is recorded as a run, child of
the training run, with its parameters, metric and duration.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from headwater.definitions import HeadwaterError, Model
from headwater.definitions.training import HIGHER_IS_BETTER, Choice, Float, Int, Search
from headwater.history.labels import micros
from headwater.registry import artifacts
from headwater.training import evaluation


def time_cut(times: np.ndarray, fraction: float, too_few: str) -> int:
    """The sample time from which the last ``fraction`` of the distinct sample times start
    (at least one time on each side); ``too_few``: the error when there is one time only."""
    distinct = np.unique(times)
    if len(distinct) < 2:
        raise HeadwaterError(too_few)
    at = min(len(distinct) - 1, max(1, int(round(len(distinct) * (1 - fraction)))))
    return int(distinct[at])


def fresh(estimator: Any, params: dict[str, Any]) -> Any:
    """An unfitted copy of ``estimator`` with ``params`` applied (scikit-learn's ``clone``
    for estimators that support it)."""
    try:
        from sklearn.base import clone

        out = clone(estimator)
    except TypeError:  # not a scikit-learn estimator: a deep copy
        out = copy.deepcopy(estimator)
    if params:
        out.set_params(**params)
    return out


def metric_of(model: Model) -> tuple[str, bool]:
    """The metric a search optimizes and whether higher is better."""
    assert model.search is not None
    name = model.search.metric or model.promotion.metric
    return name, HIGHER_IS_BETTER.get(name, model.promotion.higher_is_better)


def run_search(
    model: Model,
    train: pd.DataFrame,
    features: list[str],
    estimator: Any,
    *,
    run_id: str,
    now: Callable[[], int],
    save_trial: Callable[[dict[str, Any]], None],
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The best parameters, and a summary of the search for the version's lineage."""
    import optuna

    search: Search = model.search  # type: ignore[assignment]
    name, higher = metric_of(model)
    times = micros(train["timestamp"])
    cut = time_cut(
        times,
        search.validation_fraction,
        "a search validates on later sample times than it fits on; the training rows "
        "have one sample time: lengthen the lookback or sample more often",
    )
    fit_rows, valid_rows = train[times < cut], train[times >= cut]
    signature = artifacts.Signature.infer(fit_rows, features, model.task)
    X_fit, X_valid = signature.matrix(fit_rows), signature.matrix(valid_rows)
    y_fit = fit_rows["label"].astype(int if model.task == "classification" else float)
    y_valid = valid_rows["label"].astype(float).to_numpy()
    trials: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = {k: _suggest(trial, k, d) for k, d in search.space.items()}
        started = now()
        start = time.perf_counter()
        record: dict[str, Any] = {
            "id": f"{run_id}-t{trial.number:03d}",
            "model": model.name,
            "parent": run_id,
            "kind": "trial",
            "trial": trial.number,
            "params": {k: _plain(v) for k, v in params.items()},
            "started_us": started,
        }
        try:
            fitted = fresh(estimator, params)
            fitted.fit(X_fit, y_fit)
            scores = evaluation.predict_scores(fitted, X_valid, model.task)
            value = evaluation.score_metrics((name,), y_valid, scores, model.task, model.k)[name]
        except Exception as exc:
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                          ended_us=now(), seconds=time.perf_counter() - start)  # fmt: skip
            trials.append(record)
            save_trial(record)
            raise
        record.update(status="succeeded", metrics={name: float(value)}, ended_us=now(),
                      seconds=time.perf_counter() - start)  # fmt: skip
        trials.append(record)
        save_trial(record)
        log(f"    trial {trial.number}: {name}={value:.4f} {record['params']}")
        return float(value)

    optuna.logging.set_verbosity(logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=search.seed)
    study = optuna.create_study(direction="maximize" if higher else "minimize", sampler=sampler)
    timeout = None if search.timeout_us is None else search.timeout_us / 1e6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's experimental-feature notices
        study.optimize(objective, n_trials=search.trials, timeout=timeout, catch=(Exception,))
    done = [t for t in trials if t["status"] == "succeeded" and not np.isnan(t["metrics"][name])]
    if not done:
        reasons = "; ".join(sorted({t.get("error", "no metric") for t in trials}))[:300]
        raise HeadwaterError(f"every trial of the search failed: {reasons}")
    best = max(done, key=lambda t: t["metrics"][name] * (1 if higher else -1))
    summary = {
        "metric": name,
        "direction": "maximize" if higher else "minimize",
        "trials": len(trials),
        "failed": len(trials) - len(done),
        "stopped_by": "trials" if len(trials) >= search.trials else "timeout",
        "best": {
            "trial": best["trial"],
            "run": best["id"],
            "params": best["params"],
            "value": best["metrics"][name],
        },  # fmt: skip
        "runs": [t["id"] for t in trials],
        "validation": {"rows": len(valid_rows), "from_us": cut},
        "space": search.spec()["space"],
    }
    return dict(best["params"]), summary


def _suggest(trial: Any, name: str, dist: Int | Float | Choice) -> Any:
    if isinstance(dist, Int):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, Float):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_categorical(name, list(dist.values))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
