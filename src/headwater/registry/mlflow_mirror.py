"""Mirror a headwater run and model version to an MLflow tracking server and model registry.

For teams that already use MLflow: headwater's registry stays the source of truth; the mirror is a
read-only copy that MLflow's UI and clients can browse.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headwater.errors import HeadwaterError

if TYPE_CHECKING:
    from mlflow import MlflowClient

# MLflow's own limits (mlflow.utils.validation); longer values are rejected, so we truncate.
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

RUN_ID_TAG = "headwater.run_id"
VERSION_TAG = "headwater.version"
ARTIFACT_FOLDER = "model"
# The files of a version's artifacts (headwater's keys) that are copied to MLflow.
ARTIFACT_KEYS = ("estimator", "signature", "lightgbm")
STATUSES = {"succeeded": "FINISHED", "failed": "FAILED", "running": "RUNNING"}


class MirrorError(HeadwaterError):
    """A run or version cannot be mirrored to MLflow; the message says why and what to do."""


def mirror(
    tracking_uri: str,
    run: dict[str, Any],
    version: dict[str, Any],
    experiment: str | None = None,
    read: Callable[[dict[str, Any], str], bytes] | None = None,
    trials: Sequence[dict[str, Any]] = (),
) -> dict[str, str]:
    """Copy a registered version and its training run to MLflow; safe to call again.

    The MLflow run (named ``{model}-v{version}``, in experiment ``headwater/{model}`` unless
    ``experiment`` is given) gets the params, metrics, step durations, lineage tags and model
    files; the registered model named after the headwater model gets a version with the alias
    ``headwater-v{version}`` (MLflow reserves ``v1``-style alias names). ``read`` gives the
    bytes of one artifact of the version (``Registry.read_artifact``). ``trials``: the run's
    search trials (run records), each mirrored as a child run (MLflow's nested runs) with
    its parameters and metric. A version mirrored before
    is found by its ``headwater.run_id`` tag and not copied twice. Example::

        doc = project.registry.version("churn", 3)
        run = next(r for r in project.registry.runs("churn") if r["id"] == doc["run"])
        mirror("http://mlflow.internal:5000", run, doc, read=project.registry.read_artifact)
        # {"experiment_id": "7", "run_id": "1f0c...", "model_version": "3"}
    """
    try:
        import mlflow
    except ImportError:
        raise MirrorError(
            "mirroring to MLflow needs the mlflow extra: pip install 'headwater[mlflow]'"
        ) from None
    if run.get("id") != version.get("run"):
        raise MirrorError(
            f"run {run.get('id')!r} did not train version {version.get('version')} of "
            f"{version.get('model')!r} (its run is {version.get('run')!r}); pass the run whose "
            "id is the version's 'run'"
        )
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment_id = _experiment(client, experiment or f"headwater/{version['model']}")
    run_id = _existing_run(client, experiment_id, run["id"])
    if run_id is None:
        run_id = _create_run(client, experiment_id, run, version, read)
    for trial in trials:
        if _existing_run(client, experiment_id, trial["id"]) is None:
            _create_trial(client, experiment_id, run_id, trial)
    model_version = _register(client, run_id, version)
    return {"experiment_id": experiment_id, "run_id": run_id, "model_version": model_version}


def alias(version: dict[str, Any]) -> str:
    """The MLflow alias of a headwater version: ``headwater-v{version}``."""
    return f"headwater-v{version['version']}"


def _experiment(client: MlflowClient, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException as exc:  # created by a concurrent mirror since we looked
        found = client.get_experiment_by_name(name)
        if found is None:
            raise exc from None
        return str(found.experiment_id)


def _existing_run(client: MlflowClient, experiment_id: str, headwater_run: str) -> str | None:
    """The MLflow run already mirroring ``headwater_run``; a half-written one (a mirror that
    stopped midway leaves its run unfinished) is deleted so that it is written again."""
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{headwater_run}'"
    )
    for existing in found:
        if existing.info.status != "RUNNING":
            return str(existing.info.run_id)
        client.delete_run(existing.info.run_id)
    return None


def _create_run(
    client: MlflowClient,
    experiment_id: str,
    run: dict[str, Any],
    version: dict[str, Any],
    read: Callable[[dict[str, Any], str], bytes] | None,
) -> str:
    from mlflow.entities import Metric, Param, RunTag

    created = client.create_run(
        experiment_id,
        start_time=run["started_us"] // 1000,
        run_name=f"{version['model']}-v{version['version']}",
    )
    run_id = str(created.info.run_id)
    at_ms = run["ended_us"] // 1000
    metrics = [Metric(k, v, at_ms, 0) for k, v in _metrics(run, version).items()]
    params = [Param(k, v) for k, v in _params(version).items()]
    tags = [RunTag(k, v) for k, v in _tags(run, version).items()]
    for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
    for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=params[i : i + MAX_PARAMS_TAGS_PER_BATCH])
    for i in range(0, len(tags), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=tags[i : i + MAX_PARAMS_TAGS_PER_BATCH])
    with tempfile.TemporaryDirectory() as folder:
        for path in _artifact_files(version, read, Path(folder)):
            client.log_artifact(run_id, str(path), ARTIFACT_FOLDER)
    # Finishing last marks the copy complete: an unfinished run is a mirror that stopped midway.
    client.set_terminated(run_id, STATUSES.get(run.get("status", ""), "FINISHED"), at_ms)
    return run_id


def _create_trial(
    client: MlflowClient, experiment_id: str, parent: str, trial: dict[str, Any]
) -> None:
    from mlflow.entities import Metric, Param, RunTag

    created = client.create_run(
        experiment_id,
        start_time=trial["started_us"] // 1000,
        run_name=f"{trial['model']}-trial-{trial['trial']}",
        tags={"mlflow.parentRunId": parent, RUN_ID_TAG: trial["id"]},
    )
    run_id = str(created.info.run_id)
    at_ms = trial.get("ended_us", trial["started_us"]) // 1000
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), at_ms, 0) for k, v in (trial.get("metrics") or {}).items()],
        params=[Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in trial["params"].items()],
        tags=[RunTag("headwater.trial", str(trial["trial"]))],
    )
    client.set_terminated(run_id, STATUSES.get(trial.get("status", ""), "FINISHED"), at_ms)


def _params(version: dict[str, Any]) -> dict[str, str]:
    return {
        k: (v if isinstance(v, str) else str(v))[:MAX_PARAM_LENGTH]
        for k, v in version.get("params", {}).items()
    }


def _metrics(run: dict[str, Any], version: dict[str, Any]) -> dict[str, float]:
    out = {
        k: float(v)
        for k, v in version.get("metrics", {}).items()
        if v is not None and not math.isnan(v)
    }
    for step in run.get("steps", []):
        if step.get("seconds") is not None:
            out[f"step.{step['name']}.seconds"] = float(step["seconds"])
    return out


def _tags(run: dict[str, Any], version: dict[str, Any]) -> dict[str, str]:
    lineage = version.get("lineage", {})
    snapshot = lineage.get("snapshot", {})
    code = lineage.get("code") or run.get("code") or {}
    tags = {
        RUN_ID_TAG: run["id"],
        VERSION_TAG: str(version["version"]),
        "headwater.model": version["model"],
        "headwater.data_hash": snapshot.get("data_hash") or run.get("data_hash"),
        "headwater.definition_version": lineage.get("definition_version"),
        "headwater.rows": snapshot.get("rows"),
        "headwater.label": _json(lineage.get("label")),
        "headwater.features": _json(lineage.get("features")),
        "headwater.snapshot.offsets": _json(snapshot.get("log", {}).get("offsets")),
        "headwater.snapshot.as_of_us": snapshot.get("log", {}).get("as_of_us"),
        "mlflow.source.git.commit": code.get("git_commit"),
        "headwater.code.dirty": code.get("dirty"),
    }
    return {k: str(v)[:MAX_TAG_LENGTH] for k, v in tags.items() if v is not None}


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _artifact_files(
    version: dict[str, Any], read: Callable[[dict[str, Any], str], bytes] | None, folder: Path
) -> list[Path]:
    """The version's model files, copied into ``folder`` under their own names."""
    names = version.get("artifacts", {})
    files = []
    for key in ARTIFACT_KEYS:
        if not names.get(key):
            continue
        try:
            data = read(version, key) if read else Path(names[key]).read_bytes()
        except (HeadwaterError, OSError) as exc:
            raise MirrorError(
                f"version {version['version']} of {version['model']!r} has lost its {key} "
                f"artifact ({exc}); retrain the model, then mirror the new version"
            ) from None
        path = folder / Path(names[key]).name
        path.write_bytes(data)
        files.append(path)
    return files


def _register(client: MlflowClient, run_id: str, version: dict[str, Any]) -> str:
    """The registered model version for the mirrored run, created (with its alias) if missing."""
    name = version["model"]
    _registered_model(client, name)
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if found:
        number = str(found[0].version)
    else:
        source = f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT_FOLDER}"
        created = client.create_model_version(
            name,
            source,
            run_id=run_id,
            tags={VERSION_TAG: str(version["version"]), RUN_ID_TAG: str(version["run"])},
        )
        number = str(created.version)
    client.set_registered_model_alias(name, alias(version), number)
    return number


def _registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(name)
        except MlflowException as again:  # created by a concurrent mirror since we looked
            if again.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
