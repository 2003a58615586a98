"""``init``, ``plan`` and ``apply``: a project's folder and its registered definitions."""

from __future__ import annotations

import getpass
import os
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from headwater.cli.common import (
    EnvOpt,
    ProjectOpt,
    TeamOpt,
    app,
    check_team,
    console,
    err,
    open_project,
)
from headwater.errors import HeadwaterError
from headwater.project.planning import Plan


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Where to create the project")] = Path("."),
    example: Annotated[str, typer.Option(help="Start from an example project")] = "shop",
) -> None:
    """Create a project folder from an example (headwater.toml and definitions)."""
    source = Path(__file__).parents[1] / "examples" / example
    if not source.is_dir():
        raise HeadwaterError(f"no example named {example!r}")
    if (folder / "headwater.toml").exists():
        raise HeadwaterError(f"{folder} already holds a project (headwater.toml)")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("headwater.toml", "definitions.py"):
        shutil.copy(source / name, folder / name)
    console.print(f"created project in {folder}; next: headwater plan -p {folder}")


def _print_plan(plan: Plan, title: str) -> None:
    table = Table(title=title)
    for column in ("change", "kind", "name", "version", "detail"):
        table.add_column(column)
    for c in plan.pending:
        version = f"{c.old_version or ''} -> {c.new_version or ''}".strip(" ->")
        table.add_row(c.action, c.kind, c.name, version, c.detail)
    console.print(table if plan.pending else f"{title}: nothing to change")
    console.print(", ".join(f"{n} {a}" for a, n in sorted(plan.summary().items())))
    for reason in plan.refused:
        err.print(f"[red]refused:[/red] {reason}")


@app.command()
def plan(team: TeamOpt = None, project: ProjectOpt = Path("."), env: EnvOpt = None) -> None:
    """Show what `apply` would change: added, changed, updated, deprecated, removed
    (--team: only the definitions that team owns)."""
    with open_project(project, env) as p:
        result = p.plan()
        if team is not None:
            check_team(p, team)
            result = result.of_team(team)
        _print_plan(result, "plan" if team is None else f"plan of team {team!r}")
        if result.refused:
            raise typer.Exit(1)


@app.command()
def apply(project: ProjectOpt = Path("."), env: EnvOpt = None) -> None:
    """Register the definitions in the metadata store, with content-hash versions (and who
    applied them: this machine's user)."""
    with open_project(project, env) as p:
        _print_plan(p.apply(by=_user()), "applied")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's)
        return f"uid {os.getuid()}"


KINDS = ("streams", "features", "labels", "models", "services")


@app.command("list")
def list_definitions(
    kind: Annotated[
        str | None, typer.Argument(help="streams, features, labels, models or services")
    ] = None,
    team: TeamOpt = None,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """What the project defines, with owners: streams, features, labels, models, services."""
    if kind is not None and kind not in KINDS:
        raise typer.BadParameter(f"{kind!r} is not one of {', '.join(KINDS)}", param_hint="KIND")
    with open_project(project, env) as p:
        d = p.definitions
    rows: dict[str, list[tuple[str, ...]]] = {
        "streams": [
            (s.name, s.owner, ", ".join(s.keys), str(len(s.fields)), _pii(s.pii_policies))
            for s in d.streams.values()
        ],
        "features": _feature_rows(d),
        "labels": [
            (x.name, x.owner, x.entity.name, _days(x.horizon_us)) for x in d.labels.values()
        ],
        "models": [
            (m.name, m.owner, m.label.name, str(len(m.features))) for m in d.models.values()
        ],
        "services": [
            (s.name, s.owner, s.routing, ", ".join(v.name for v in s.variants))
            for s in d.services.values()
        ],
    }
    headers = {
        "streams": ("stream", "owner", "keys", "fields", "PII"),
        "features": ("feature", "owner", "aggregation", "columns (name_window)"),
        "labels": ("label", "owner", "entity", "horizon"),
        "models": ("model", "owner", "label", "features"),
        "services": ("service", "owner", "routing", "variants"),
    }
    for name in (kind,) if kind else KINDS:
        chosen = [r for r in rows[name] if team is None or r[1] == team]
        table = Table(*headers[name], title=f"{len(chosen)} {name}")
        for row in sorted(chosen):
            table.add_row(*row)
        console.print(table)


def _feature_rows(d: Any) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [
        (
            f.name,
            str(f.owner),
            f"{f.aggregation.kind}({f.aggregation.field or ''}) of {f.stream.name}",
            ", ".join(c.name for c in f.columns),
        )
        for f in d.features.values()
    ]
    rows += [
        (x.name, str(x.owner), f"derived from {', '.join((*x.inputs, *x.context))}", x.name)
        for x in d.derived.values()
    ]
    return rows


def _pii(policies: dict[str, str]) -> str:
    return ", ".join(f"{f} ({p})" for f, p in policies.items()) or "-"


def _days(micros: int) -> str:
    return f"{micros / 86_400_000_000:g}d"
