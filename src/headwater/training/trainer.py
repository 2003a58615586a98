"""``headwater train``: the pipeline from a model definition to a registered version.

Steps: training_set -> validate -> split -> fit -> evaluate -> profile -> register. Every step
but the last is cached by the hash of its inputs, so a failed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from headwater.definitions import HeadwaterError, Model, Stream
from headwater.definitions.base import content_hash
from headwater.definitions.expectations import Expectation
from headwater.definitions.feature import function_source
from headwater.definitions.training import Step, finals, plan
from headwater.features.catalog import FeatureCatalog
from headwater.history.archiver import Archiver
from headwater.history.labels import (
    build_spine,
    label_values,
    micros,
    sample_times,
)
from headwater.log.base import Log, partition_name
from headwater.registry import artifacts
from headwater.registry.registry import Registry
from headwater.training import evaluation
from headwater.training.pipeline import Fresh, Pipeline, StepFailed, Task, outputs_of
from headwater.training.profile import reference_profile
from headwater.training.search import fresh, run_search, time_cut
from headwater.training.sets import TrainingSets

PACKAGES = ("headwater", "scikit-learn", "lightgbm", "numpy", "pandas", "pyarrow", "duckdb")


class DataValidationError(HeadwaterError):
    """The training data failed a check; the message lists every failed check."""


@dataclass
class TrainResult:
    run: dict[str, Any]
    version: int
    metrics: dict[str, float]


def data_hash(frame: pd.DataFrame) -> str:
    """A content hash of a training table: same rows and values, same hash."""
    hashed = pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(frame.columns).encode())
    return digest.hexdigest()[:16]


def code_version(root: Path) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None}
    if commit.returncode != 0:
        return {"git_commit": None}
    return {"git_commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = None
    return out


def _json_params(estimator: Any) -> dict[str, Any]:
    get = getattr(estimator, "get_params", None)
    params = get(deep=False) if callable(get) else {}
    return {
        k: v if isinstance(v, int | float | str | bool | type(None)) else repr(v)
        for k, v in params.items()
    }


class Trainer:
    """Runs a model's training pipeline: training data from the log's history, the fit, its
    evaluation, and a new version in ``registry`` (model files in its artifacts folder).
    ``root`` is the project folder (its git commit is part of the lineage; step outputs are
    cached under ``cache``, by default its ``.headwater/cache``); ``log`` receives progress
    lines."""

    def __init__(
        self,
        *,
        registry: Registry,
        training: TrainingSets,
        catalog: FeatureCatalog,
        streams: Mapping[str, Stream],
        event_log: Log,
        archiver: Archiver,
        clock: Callable[[], int],
        root: Path,
        log: Callable[[str], None],
        cache: Path | None = None,
    ) -> None:
        self.registry, self.log = registry, log
        self._training, self._catalog, self._stream_defs = training, catalog, streams
        self._event_log, self._archiver = event_log, archiver
        self._now, self._root = clock, root
        self._cache = cache or root / ".headwater" / "cache"

    # -- the pipeline ---------------------------------------------------------------------

    def train(
        self,
        model: Model,
        reproduce: int | None = None,
        snapshot: dict[str, Any] | None = None,
        shared_with: Sequence[str] = (),
    ) -> TrainResult:
        """Run the pipeline; ``snapshot`` (from ``snapshots``) fixes the log offsets and the
        time to train as of; ``shared_with`` names the models whose training set was built
        together with this one's (``share_training_sets``), recorded in the run."""
        run_id = uuid.uuid4().hex[:12]
        started = self._now()
        snapshot = snapshot or self._snapshot(model, reproduce)
        pipeline = self._pipeline(model)
        run: dict[str, Any] = {
            "id": run_id,
            "model": model.name,
            "status": "running",
            "started_us": started,
            "snapshot": snapshot,
            "definition_version": model.version,
            "code": code_version(self._root),
            "packages": package_versions(),
            "reproduces": reproduce,
        }
        if shared_with:
            run["training_set_shared_with"] = [m for m in shared_with if m != model.name]
        try:
            version, metrics = self._run(model, snapshot, pipeline, run)
        except StepFailed as exc:
            run.update(
                status="failed", error=str(exc), steps=pipeline.summary(), ended_us=self._now()
            )
            self.registry.save_run(run)
            raise
        return TrainResult(run, version, metrics)

    def _run(
        self, model: Model, snapshot: dict[str, Any], pipeline: Pipeline, run: dict[str, Any]
    ) -> tuple[int, dict[str, float]]:
        nodes = plan(model.name, model.steps, model.search is not None)
        run["dag"] = [
            {"name": n.name, "builtin": n.builtin, "outputs": list(n.outputs),
             "inputs": {p: f"{step}.{out}" for p, (step, out) in n.inputs.items()}}
            for n in nodes
        ]  # fmt: skip
        champion = self.registry.alias(model.name, "champion")
        tasks = self._tasks(model, snapshot, run["id"], champion)
        estimator_code = function_source(model.estimator)
        given = {
            "features": (list(model.features), content_hash(list(model.features))),
            "estimator": (Fresh(model.estimator), content_hash(estimator_code)),
            "params": ({}, content_hash({})),
            "search": (None, content_hash(None)),
        }
        values = pipeline.run(nodes, tasks, given)
        final = finals(model.name, model.steps, model.search is not None)
        art = {name: values[ref] for name, ref in final.items()}
        if art["search"] is not None:
            run["search"] = art["search"]
        run.update(params=_json_params(art["fitted"]), metrics=art["evaluation"]["metrics"])
        start = time.perf_counter()
        try:
            version = self._register(model, snapshot, art, pipeline, run)
        except Exception as exc:
            raise StepFailed("register", f"{type(exc).__name__}: {exc}", "train again") from exc
        self.log(f"  {'register':<14} {'done':<7} {time.perf_counter() - start:7.2f}s")
        return version, art["evaluation"]["metrics"]

    def _tasks(
        self, model: Model, snapshot: dict[str, Any], run_id: str, champion: int | None
    ) -> dict[str, Task]:
        """How each built-in step runs, and what besides its inputs decides its output;
        then the model's own steps (their code decides theirs)."""
        tasks = {
            "training_set": Task(
                lambda: self._dataset(model, snapshot), self._set_config(model, snapshot)
            ),
            "validate": Task(
                lambda dataset: self._validate(model, dataset),
                [
                    model.min_rows,
                    [e.spec() for e in model.expectations],
                    model.task,
                    list(model.features),
                ],
            ),
            "split": Task(
                lambda dataset: self._split(model, dataset["frame"]), [model.test_fraction]
            ),
            "train_rows": Task(
                lambda dataset, split: dataset["frame"].iloc[split["train"]], [], cache=False
            ),
            "test_rows": Task(
                lambda dataset, split: dataset["frame"].iloc[split["test"]], [], cache=False
            ),
            "search": Task(
                lambda train, features, estimator: run_search(
                    model,
                    train,
                    list(features),
                    estimator,
                    run_id=run_id,
                    now=self._now,
                    save_trial=self.registry.save_run,
                    log=self.log,
                ),
                [model.search.spec() if model.search else None, model.task, model.k],
            ),
            "fit": Task(
                lambda train, features, estimator, params: self._fit(
                    model, train, list(features), estimator, params
                ),
                [model.task],
            ),
            "evaluate": Task(
                lambda test, fitted, signature: self._evaluate(
                    model, test, fitted, signature, snapshot
                ),
                [
                    list(model.metrics),
                    model.k,
                    None if model.baseline is None else function_source(model.baseline),
                    [s.spec() for s in model.segments],
                    model.promotion.metric,
                    champion,
                ],
            ),
            "profile": Task(
                lambda train, signature, evaluation: reference_profile(
                    train[list(signature.features)], evaluation["scores"]
                ),
                [],
            ),
        }
        for s in model.steps:
            tasks[s.name] = Task(
                _checked(model, s), [function_source(s.fn), list(s.outputs)], s.cache, s.retries
            )
        return tasks

    @staticmethod
    def _set_config(model: Model, snapshot: dict[str, Any]) -> list[Any]:
        """What decides a model's training set: its examples' definition and the log's
        snapshot (a training set built for several models is put under the same key)."""
        return [model.examples_version, snapshot]

    def _snapshot(self, model: Model, reproduce: int | None) -> dict[str, Any]:
        if reproduce is not None:
            return dict(self.registry.version(model.name, reproduce)["lineage"]["snapshot"]["log"])
        return self.snapshots([model])[model.name]

    def snapshots(self, models: Sequence[Model]) -> dict[str, dict[str, Any]]:
        """What each model trains on: its streams' end offsets in the log, read once for all
        the models (two models reading one stream see the same events), and one time."""
        log = self._event_log
        streams = {m.name: sorted(self._streams(m)) for m in models}
        ends = {
            s: [log.end_offset(s, p) for p in range(log.partitions(s))]
            for s in sorted({s for names in streams.values() for s in names})
        }
        as_of = self._now()
        return {
            m.name: {
                "offsets": {
                    partition_name(s, p): end
                    for s in streams[m.name]
                    for p, end in enumerate(ends[s])
                },
                "as_of_us": as_of,
            }
            for m in models
        }

    def share_training_sets(
        self, models: Sequence[Model], snapshots: Mapping[str, dict[str, Any]]
    ) -> list[list[str]]:
        """Build one training set for each group of models that learn from the same examples
        (one entity, the same streams naming it, hence one spine, and the same sample
        times): one point-in-time join over the union of their features, one label per
        distinct label. Models with other spines build their own: a join over a union of
        spines costs every feature set the rows of all of them (measured: 500 models of
        500 streams took longer together than apart). Each model's share is what its own
        build would give (its columns, its label); it goes into
        the model's step cache, so ``train`` finds its training set built. Returns the
        groups of two or more; a group whose build fails is left to each model's own build
        (which then reports its own error)."""
        groups: dict[tuple[Any, ...], list[Model]] = {}
        for m in models:
            times = tuple(sample_times(m, snapshots[m.name]["as_of_us"]))
            groups.setdefault((tuple(m.entity.keys), self._keyed(m), times), []).append(m)
        shared = []
        for members in groups.values():
            if len(members) < 2:
                continue
            offsets: dict[str, int] = {}
            for m in members:
                offsets.update(snapshots[m.name]["offsets"])
            as_of = snapshots[members[0].name]["as_of_us"]
            names = [m.name for m in members]
            start = time.perf_counter()
            try:
                datasets = self._datasets(members, offsets, as_of)
            except Exception as exc:  # noqa: BLE001 - each model builds its own instead
                self.log(f"shared training set of {', '.join(names)} failed: {exc}")
                continue
            self.log(
                f"shared training set of {', '.join(names)}: {time.perf_counter() - start:.2f}s"
            )
            for m in members:
                config = self._set_config(m, snapshots[m.name])
                self._pipeline(m).put("training_set", config, datasets[m.name], "dataset")
            shared.append(names)
        return shared

    def _pipeline(self, model: Model) -> Pipeline:
        return Pipeline(
            self._cache / model.name,
            model.retries,
            f"fix the cause, then run `headwater train {model.name}` again; "
            "finished steps are reused",
            self.log,
            parallel=model.parallel,
        )

    def streams_of(self, model: Model) -> set[str]:
        """The streams a model's features and label read."""
        return self._streams(model)

    def _keyed(self, model: Model) -> tuple[str, ...]:
        """The streams a model reads that name its entity, where its entities are seen (a
        user-item model's pairs in the streams with both ids, not the user-only ones)."""
        keys = model.entity.keys
        return tuple(
            n for n in sorted(self._streams(model))
            if all(k in self._stream_defs[n].fields for k in keys)
        )  # fmt: skip

    def _streams(self, model: Model) -> set[str]:
        res = self._catalog.resolve(_columns(model))
        return {self._catalog.plan(pid).stream.name for pid in res.columns} | {
            model.label.stream.name
        }

    # -- steps ----------------------------------------------------------------------------

    def _dataset(self, model: Model, snapshot: dict[str, Any]) -> dict[str, Any]:
        found = self._datasets([model], snapshot["offsets"], snapshot["as_of_us"])
        if model.name not in found:
            raise HeadwaterError(
                f"model {model.name!r} has no training examples: no entity has events "
                f"before the sample times (as of {snapshot['as_of_us']}); ingest more "
                "history or shorten the label horizon"
            )
        return found[model.name]

    def _datasets(
        self, models: Sequence[Model], offsets: dict[str, int], as_of_us: int
    ) -> dict[str, dict[str, Any]]:
        """The training sets of models with one spine (one entity, the same streams naming
        it, the same sample times), from one build of all their features, each label
        computed once; empty when the spine is (no example)."""
        first = models[0]
        for name in sorted({s for m in models for s in self._streams(m)}):
            self._archiver.catch_up(self._stream_defs[name])
        keyed = [self._stream_defs[n] for n in self._keyed(first)]
        engine = self._training.engine
        seen = engine.first_seen(first.entity.keys, keyed, offsets)
        times = sample_times(first, as_of_us)
        spine = build_spine(seen, times, first.entity.keys)
        if spine.empty:
            return {}
        wanted = {m.name: self._catalog.resolve(_columns(m)).requested for m in models}
        union = list(dict.fromkeys(f for m in models for f in wanted[m.name]))
        table = self._training.build(spine, union, snapshot=offsets).to_pandas()
        base = [c for c in table.columns if c not in union]  # the spine's columns
        times_us = micros(spine["timestamp"])
        labels: dict[str, Any] = {}
        out = {}
        for m in models:
            if m.label.version not in labels:
                labels[m.label.version] = label_values(
                    engine, m.label, spine, times_us, offsets
                ).to_numpy()
            frame = table[[*base, *wanted[m.name]]].copy()
            frame["label"] = labels[m.label.version]
            frame = frame[frame["label"].notna()].reset_index(drop=True)
            out[m.name] = {
                "frame": frame,
                "hash": data_hash(frame),
                "rows": len(frame),
                "time_range": [int(times[0]), int(times[-1])],
            }
        return out

    def _validate(self, model: Model, dataset: dict[str, Any]) -> dict[str, Any]:
        frame: pd.DataFrame = dataset["frame"]
        failures: list[str] = []
        if len(frame) < model.min_rows:
            failures.append(f"{len(frame)} rows; the model needs at least {model.min_rows}")
        report: dict[str, Any] = {"rows": len(frame), "columns": {}}
        for name in model.features:
            column = frame[name]
            numeric = pd.api.types.is_numeric_dtype(column)
            report["columns"][name] = {
                "null_rate": float(column.isna().mean()) if len(frame) else 0.0,
                "min": float(column.min()) if numeric and column.notna().any() else None,
                "max": float(column.max()) if numeric and column.notna().any() else None,
            }
        if model.task == "classification" and len(frame):
            share = float(frame["label"].astype(float).mean())
            report["label_positive_rate"] = share
            if share in (0.0, 1.0):
                failures.append(f"the label has one class only (positive rate {share:.2f})")
        for e in model.expectations:
            stats = report["columns"].get(e.column)
            if stats is None:
                failures.append(f"expectation on {e.column!r}, which is not a model feature")
                continue
            if e.max_null_rate is not None and stats["null_rate"] > e.max_null_rate:
                failures.append(
                    f"{e.column}: null rate {stats['null_rate']:.3f} > {e.max_null_rate}"
                )
            if e.min_value is not None and stats["min"] is not None and stats["min"] < e.min_value:
                failures.append(f"{e.column}: minimum {stats['min']} < {e.min_value}")
            if e.max_value is not None and stats["max"] is not None and stats["max"] > e.max_value:
                failures.append(f"{e.column}: maximum {stats['max']} > {e.max_value}")
            if e.one_of is not None or e.pattern is not None:
                only = Expectation(e.column, one_of=e.one_of, pattern=e.pattern)
                values = frame[e.column].astype(object).where(frame[e.column].notna(), None)
                failures += [v.describe() for v in only.violations(values.tolist())]
        if failures:
            raise DataValidationError("training data failed validation: " + "; ".join(failures))
        return report

    def _split(self, model: Model, frame: pd.DataFrame) -> dict[str, Any]:
        times = micros(frame["timestamp"])
        cut = time_cut(
            times,
            model.test_fraction,
            "a time split needs examples at two or more sample times; "
            "increase lookback or decrease sample_every",
        )
        train = np.flatnonzero(times < cut)
        test = np.flatnonzero(times >= cut)
        return {"train": train, "test": test, "test_from_us": cut}

    def _fit(
        self,
        model: Model,
        train: pd.DataFrame,
        features: list[str],
        estimator: Any,
        params: dict[str, Any],
    ) -> tuple[Any, artifacts.Signature]:
        signature = artifacts.Signature.infer(train, features, model.task)
        fitted = fresh(estimator, params)
        y = train["label"].astype(int if model.task == "classification" else float)
        fitted.fit(signature.matrix(train), y)
        return fitted, signature

    def _evaluate(
        self,
        model: Model,
        test: pd.DataFrame,
        fitted: Any,
        signature: artifacts.Signature,
        snapshot: dict[str, Any],
    ) -> dict[str, Any]:
        X = signature.matrix(test)
        y = test["label"].astype(float).to_numpy()
        scores = evaluation.predict_scores(fitted, X, model.task)
        metrics = evaluation.score_metrics(model.metrics, y, scores, model.task, model.k)
        comparison: dict[str, Any] = {}
        if model.baseline is not None:
            base = np.asarray(model.baseline(test[list(model.features)]), dtype=float)
            comparison["baseline"] = {
                "metrics": evaluation.score_metrics(
                    model.metrics, y, np.nan_to_num(base), model.task, model.k
                )
            }
        champion = self.registry.alias(model.name, "champion")
        if champion is not None:
            comparison["champion"] = self._champion_metrics(model, champion, test, y, snapshot)
        importance = evaluation.global_importance(fitted, X, y, model.task)
        out = {
            "metrics": metrics,
            "comparison": comparison,
            "importance": importance,
            "scores": scores,
            "calibration": evaluation.calibration(y, scores)
            if model.task == "classification"
            else [],
        }
        if model.segments:
            out["segments"] = evaluation.by_segment(
                model.segments,
                {s.name: test[s.name].tolist() for s in model.segments},
                y,
                scores,
                model.task,
                model.promotion.metric,
                model.k,
            )
        return out

    def _champion_metrics(
        self,
        model: Model,
        champion: int,
        test: pd.DataFrame,
        y: np.ndarray,
        snapshot: dict[str, Any],
    ) -> dict[str, Any]:
        doc = self.registry.version(model.name, champion)
        estimator, signature = self.registry.load_model(doc)
        missing = [f for f in signature.features if f not in test.columns]
        rows = test
        if missing:
            rows = self._training.build(
                test[[*model.entity.keys, "timestamp"]],
                signature.features,
                snapshot=snapshot["offsets"],
            ).to_pandas()
        scores = evaluation.predict_scores(estimator, signature.matrix(rows), model.task)
        return {
            "version": champion,
            "metrics": evaluation.score_metrics(model.metrics, y, scores, model.task, model.k),
        }

    def _register(
        self,
        model: Model,
        snapshot: dict[str, Any],
        art: dict[str, Any],
        pipeline: Pipeline,
        run: dict[str, Any],
    ) -> int:
        if self.registry.artifacts is None:
            raise HeadwaterError("the registry has no artifacts store to save the model in")
        dataset, split, evaluated = art["dataset"], art["split"], art["evaluation"]
        signature: artifacts.Signature = art["signature"]
        paths = artifacts.save(
            self.registry.artifacts, f"{model.name}/{run['id']}", art["fitted"], signature
        )
        res = self._catalog.resolve(list(signature.features))
        feature_versions = {c.name: c.feature.version for cs in res.columns.values() for c in cs}
        feature_versions.update({d.name: d.version for d in res.derived})
        lineage = {
            "definition_version": model.version,
            "features": feature_versions,
            "label": {"name": model.label.name, "version": model.label.version},
            "snapshot": {
                "log": snapshot,
                "rows": dataset["rows"],
                "data_hash": dataset["hash"],
                "sample_time_range_us": dataset["time_range"],
                "test_from_us": split["test_from_us"],
            },
            "code": run["code"],
            "packages": run["packages"],
            "steps": [s.name for s in model.steps],
        }
        if art["search"] is not None:
            lineage["search"] = art["search"]
        doc = {
            "run": run["id"],
            "created_us": self._now(),
            "metrics": evaluated["metrics"],
            "comparison": evaluated["comparison"],
            "importance": evaluated["importance"],
            "calibration": evaluated["calibration"],
            "validation": art["validation"],
            "params": run["params"],
            "profile": art["profile"],
            "lineage": lineage,
            "artifacts": paths,
            "signature": vars(signature),
            "rows": {"train": len(split["train"]), "test": len(split["test"])},
        }
        if "segments" in evaluated:
            doc["segments"] = evaluated["segments"]
        run.update(
            status="succeeded",
            ended_us=self._now(),
            steps=pipeline.summary(),
            data_hash=dataset["hash"],
            artifacts=paths,
        )
        run["steps"].append(
            {"name": "register", "status": "done", "seconds": 0.0, "attempts": 1, "key": "",
             "error": None, "started": run["steps"][-1]["started"] + run["steps"][-1]["seconds"],
             "inputs": {}, "outputs": [], "builtin": True}
        )  # fmt: skip
        return self.registry.register(model.name, doc, run)


def _columns(model: Model) -> list[str]:
    """The features a model's training set holds: its own and its segments'."""
    return list(dict.fromkeys([*model.features, *(s.name for s in model.segments)]))


def _checked(model: Model, s: Step) -> Callable[..., Any]:
    """A step of the model's own, whose outputs are checked where they replace a built-in
    one: a wrong type fails the step with a message naming it, not a later step."""

    def call(**inputs: Any) -> Any:
        result = s.fn(**inputs)
        for name, value in outputs_of(s.name, s.outputs, result).items():
            _check_output(model, s.name, name, value)
        return result

    return call


def _check_output(model: Model, step: str, name: str, value: Any) -> None:
    def wrong(expected: str) -> HeadwaterError:
        return HeadwaterError(f"step {step!r} returned {name!r} as {type(value).__name__}; "
                              f"it must be {expected}")  # fmt: skip

    if name == "features":
        if not isinstance(value, list | tuple) or not value:
            raise wrong("a non-empty list of the model's feature names")
        unknown = [f for f in value if f not in model.features]
        if unknown:
            raise HeadwaterError(
                f"step {step!r} chose {unknown}, which are not features of model "
                f"{model.name!r}; a step selects among {list(model.features)}"
            )
    elif name == "train":
        if not isinstance(value, pd.DataFrame) or "label" not in value or value.empty:
            raise wrong("a non-empty DataFrame with the training rows' columns")
    elif name == "params":
        if not isinstance(value, dict):
            raise wrong("a dict of hyperparameters")
    elif name == "estimator":
        if not callable(getattr(value, "fit", None)):
            raise wrong("an unfitted estimator (with a fit method)")
    elif name == "fitted":
        method = "predict_proba" if model.task == "classification" else "predict"
        if not callable(getattr(value, method, None)):
            raise wrong(f"a fitted estimator (with {method})")
