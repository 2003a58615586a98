"""``init``, ``plan`` and ``apply``: a project's folder and its registered definitions."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from headwater.cli.common import ProjectOpt, app, console, err, open_project
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
def plan(project: ProjectOpt = Path(".")) -> None:
    """Show what `apply` would change: added, changed, updated, deprecated, removed."""
    with open_project(project) as p:
        result = p.plan()
        _print_plan(result, "plan")
        if result.refused:
            raise typer.Exit(1)


@app.command()
def apply(project: ProjectOpt = Path(".")) -> None:
    """Register the definitions in the metadata store, with content-hash versions."""
    with open_project(project) as p:
        _print_plan(p.apply(), "applied")
