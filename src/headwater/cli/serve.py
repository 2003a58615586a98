"""``serve``: the HTTP API, optionally with processing, stream scoring and monitoring."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from headwater.cli.common import ProjectOpt, app, open_project
from headwater.serving import log_format


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: 127.0.0.1 (loopback)")] = None,
    port: Annotated[int | None, typer.Option(help="Default: from headwater.toml, 8800")] = None,
    with_processor: Annotated[
        bool, typer.Option("--with-processor", help="Also run the stream processor in this process")
    ] = False,
    with_scoring: Annotated[
        bool, typer.Option("--with-scoring", help="Also score the trigger streams of services")
    ] = False,
    log_predictions: Annotated[
        bool,
        typer.Option("--log-predictions", help="Write one JSON log line per prediction to stderr"),
    ] = False,
    monitor_every: Annotated[
        float,
        typer.Option(help="Run the monitor every N seconds and export it on /metrics (0: off)"),
    ] = 0,
    project: ProjectOpt = Path("."),
) -> None:
    """Start the HTTP API (OpenAPI docs at /docs)."""
    log_format.configure(logging.INFO if log_predictions else logging.WARNING)
    with open_project(project) as p:
        p.serve(
            host,
            port,
            with_processor=with_processor,
            with_scoring=with_scoring,
            monitor_every=monitor_every,
        )
