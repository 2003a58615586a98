"""Schedules: a model with a cron ``schedule`` is trained, and a service with a
``batch_schedule`` scores its entities, when a fire time passed since the last successful run
(runs of scoring jobs are recorded in the metadata store, so a restarted scheduler neither
skips nor repeats one)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from headwater.definitions import DefinitionError
from headwater.definitions.collection import Definitions
from headwater.definitions.types import from_micros, to_micros
from headwater.registry.registry import Registry
from headwater.serving.batch_scoring import score_entities, write_scores
from headwater.serving.runtime import Serving
from headwater.stores.metadata.base import MetadataStore


class Project(Protocol):
    """What the scheduler runs on (``headwater.Project`` is one)."""

    root: Path
    definitions: Definitions
    registry: Registry
    metadata: MetadataStore

    @property
    def serving(self) -> Serving: ...

    def now(self) -> int: ...

    def model(self, name: str) -> Any: ...

    def train_all(
        self,
        models: list[str] | None = None,
        *,
        jobs: int = 1,
        log: Callable[[str], None] | None = None,
    ) -> dict[str, Any]: ...


def previous_fire(schedule: str, now: datetime) -> datetime:
    from croniter import croniter

    if not croniter.is_valid(schedule):
        raise DefinitionError(f"schedule {schedule!r} is not a valid cron expression")
    fire: datetime = croniter(schedule, now).get_prev(datetime)
    return fire


def due_models(project: Project) -> list[str]:
    """Models whose latest cron fire time is after their last successful run's start."""
    now = from_micros(project.now())
    due = []
    for name, model in sorted(project.definitions.models.items()):
        if not model.schedule or model.deprecated:
            continue
        fire = to_micros(previous_fire(model.schedule, now))
        runs = [r for r in project.registry.runs(name) if r["status"] == "succeeded"]
        if not runs or runs[-1]["started_us"] < fire:
            due.append(name)
    return due


SCORING_RUNS = "batch_scoring_runs"


def due_scoring(project: Project) -> list[str]:
    """Services whose batch schedule fired after their last successful scoring run."""
    now = from_micros(project.now())
    runs = project.metadata.get_records(SCORING_RUNS)
    due = []
    for name, service in sorted(project.definitions.services.items()):
        if not service.batch_schedule or service.deprecated:
            continue
        fire = to_micros(previous_fire(service.batch_schedule, now))
        last = runs.get(name)
        if last is None or last["started_us"] < fire:
            due.append(name)
    return due


def run_due_scoring(project: Project, log: Callable[[str], None]) -> list[tuple[str, int | str]]:
    """Score every due service into its ``batch_output``; record each successful run."""
    done: list[tuple[str, int | str]] = []
    for name in due_scoring(project):
        service = project.definitions.services[name]
        started = project.now()
        when = from_micros(started)
        out = project.root / service.batch_output.format(
            service=name, date=when.strftime("%Y-%m-%dT%H%M%SZ")
        )
        log(f"scoring {name} (scheduled: {service.batch_schedule}) -> {out}")
        try:
            result = score_entities(project.serving, name, when)
            write_scores(result, out)
        except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the others
            log(f"{name} failed: {exc}")
            done.append((name, f"failed: {exc}"))
            continue
        project.metadata.put_records(
            [
                (
                    SCORING_RUNS,
                    name,
                    {"started_us": started, "rows": len(result), "path": str(out)},
                )
            ]
        )
        done.append((name, len(result)))
    return done


def run_due(
    project: Project, log: Callable[[str], None], jobs: int = 1
) -> list[tuple[str, int | str]]:
    """Train every due model, together (one training set for models that learn from the
    same examples, ``jobs`` processes); a failure is logged and the others still run."""
    due = due_models(project)
    for name in due:
        log(f"due: {name} (scheduled: {project.model(name).schedule})")
    if not due:
        return []
    results = project.train_all(due, jobs=jobs, log=log)
    return [
        (name, f"failed: {r}" if isinstance(r, Exception) else r.version)
        for name, r in results.items()
    ]
