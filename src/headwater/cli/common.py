"""What every verb shares: the typer app, the consoles, opening a project, progress bars."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from headwater.definitions.types import InvalidValue, to_micros
from headwater.project.project import Project

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="headwater: raw events in; features, training sets and models out.",
)
# Piped output (CI, files) gets room for tables instead of rich's 80-column default.

console = Console() if sys.stdout.isatty() else Console(width=130)

err = Console(stderr=True, soft_wrap=True)

_NUMBER = re.compile(r"-?\d+(\.\d*)?")  # epoch seconds on the command line

ProjectOpt = Annotated[
    Path, typer.Option("--project", "-p", help="Project folder", envvar="HEADWATER_PROJECT")
]


def open_project(path: Path) -> Project:
    return Project(path)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def time_option(value: str, option: str) -> int:
    """A time given on the command line (ISO 8601, or epoch seconds), in microseconds; a
    usage error naming the option otherwise."""
    try:
        return to_micros(float(value) if _NUMBER.fullmatch(value.strip()) else value)
    except InvalidValue as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
