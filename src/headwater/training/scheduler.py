"""Scheduled retraining: a model with a cron ``schedule`` is trained when a fire time passed
since its last successful run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from headwater.definitions import DefinitionError
from headwater.definitions.types import from_micros, to_micros


def previous_fire(schedule: str, now: datetime) -> datetime:
    from croniter import croniter

    if not croniter.is_valid(schedule):
        raise DefinitionError(f"schedule {schedule!r} is not a valid cron expression")
    fire: datetime = croniter(schedule, now).get_prev(datetime)
    return fire


def due_models(project: Any) -> list[str]:
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


def run_due(project: Any, log: Callable[[str], None]) -> list[tuple[str, int | str]]:
    """Train every due model; a failure is logged and the others still run."""
    done: list[tuple[str, int | str]] = []
    for name in due_models(project):
        log(f"training {name} (scheduled: {project.model(name).schedule})")
        try:
            done.append((name, project.train(name, log=log).version))
        except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others
            log(f"{name} failed: {exc}")
            done.append((name, f"failed: {exc}"))
    return done
