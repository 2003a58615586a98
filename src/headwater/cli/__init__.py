"""The ``headwater`` command line: one module per verb group; each verb parses its
arguments, calls one operation of the SDK (``headwater.Project``) and prints the result."""

from __future__ import annotations

import sys

from rich.markup import escape

from headwater.cli import (  # noqa: F401 - each module registers its verbs on the app
    definitions,
    environments,
    events,
    features,
    models,
    monitoring,
    privacy,
    quickstart,
    scoring,
    security,
    serve,
    sources,
)
from headwater.cli.common import app, err
from headwater.errors import HeadwaterError

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except HeadwaterError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(1)
