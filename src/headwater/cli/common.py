"""What every verb shares: the typer app, the consoles, opening a project, progress bars."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from headwater.definitions.types import InvalidValue, from_micros, iso, to_micros
from headwater.errors import HeadwaterError, did_you_mean
from headwater.project.project import Project

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help: options with their metavars as click writes them (no "<bool>" after flags),
    # and the same text in a terminal, a pipe and docs/cli.md.
    rich_markup_mode=None,
    help="headwater: raw events in; features, training sets and models out.",
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"headwater {version('headwater')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    """headwater: raw events in; features, training sets and models out."""


# Piped output (CI, files) gets room for tables instead of rich's 80-column default.

console = Console() if sys.stdout.isatty() else Console(width=130)

err = Console(stderr=True, soft_wrap=True)

_NUMBER = re.compile(r"-?\d+(\.\d*)?")  # epoch seconds on the command line

__all__ = ["iso"]  # times for people: every verb prints them with it (raw only under --json)

ProjectOpt = Annotated[
    Path, typer.Option("--project", "-p", help="Project folder", envvar="HEADWATER_PROJECT")
]


EnvOpt = Annotated[
    str | None,
    typer.Option(
        "--env",
        "-e",
        help="The environment (of [environments] in headwater.toml)",
        envvar="HEADWATER_ENV",
        show_envvar=True,
    ),
]


TeamOpt = Annotated[str | None, typer.Option("--team", help="Only what this team owns")]


def check_team(project: Project, team: str) -> list[str]:
    """The names of the services, models, features... ``team`` owns; a team that owns no
    definition is an error naming the owners (a typo, more often than not)."""
    owned = [d.name for d in project.definitions.all() if d.owner == team]
    if not owned:
        teams = sorted({d.owner for d in project.definitions.all() if d.owner})
        raise HeadwaterError(
            f"no definition is owned by team {team!r}"
            + did_you_mean(team, teams)
            + f" (owners: {', '.join(teams)})"
        )
    return owned


def open_project(path: Path, env: str | None = None) -> Project:
    """The project at ``path`` in the environment ``env``; a project that declares
    environments is named with its environment on stderr first, so every command's output
    says where it comes from."""
    project = Project(path, env=env)
    if project.environment.declared:
        err.print(f"[dim]{project.settings.name} · environment {project.environment.name}[/dim]")
    return project


def progress_bar(quiet: bool = False, transient: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=transient,
        disable=quiet,
    )


def time_option(value: str, option: str) -> int:
    """A time given on the command line (ISO 8601, or epoch seconds), in microseconds; a
    usage error naming the option otherwise."""
    try:
        return to_micros(float(value) if _NUMBER.fullmatch(value.strip()) else value)
    except InvalidValue as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def iso_day(micros: int) -> str:
    """The UTC day of a time.

    >>> iso_day(1_700_000_000_000_000)
    '2023-11-14'
    """
    return from_micros(int(micros)).date().isoformat()


def names_option(values: list[str]) -> list[str]:
    """Feature names given as repeated options, comma lists, or both, in order, once each.

    >>> names_option(["a,b", "c", "a"])
    ['a', 'b', 'c']
    """
    names = [n.strip() for value in values for n in value.split(",") if n.strip()]
    return list(dict.fromkeys(names))


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def print_segments(segments: dict[str, Any], where: str) -> None:
    """Each segment's groups: rows, the metric, positive rates, calibration; and the gap."""
    for name, seg in segments.items():
        gap = seg.get("gap")
        metric = seg["metric"]
        table = Table("group", "rows", metric, "positive rate", "predicted", "calibration",
                      title=f"segment {name} ({where})")  # fmt: skip
        for group, g in seg["groups"].items():
            small = g["rows"] < seg.get("min_rows", 0)
            table.add_row(
                group + (" (few rows)" if small else ""),
                f"{g['rows']:,}",
                "-" if g.get(metric) is None else f"{g[metric]:.4f}",
                f"{g['positive_rate']:.3f}",
                f"{g['predicted_rate']:.3f}",
                f"{g['calibration']:+.3f}",
            )
        console.print(table)
        if gap:
            low, high = gap["between"]
            console.print(f"largest gap in {metric}: {gap['value']:.4f} ({low} vs {high})")
