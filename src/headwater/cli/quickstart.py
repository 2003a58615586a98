"""``quickstart``: the shop example end to end, on the embedded stores or on yours."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from headwater.cli.common import app, console, time_option
from headwater.quickstart import run_quickstart


@app.command()
def quickstart(
    folder: Annotated[Path, typer.Option("--dir", help="Where to create the project")] = Path(
        "headwater-shop"
    ),
    users: Annotated[int, typer.Option(help="Simulated users")] = 2000,
    days: Annotated[int, typer.Option(help="Simulated days of activity before now")] = 56,
    loop: Annotated[
        bool,
        typer.Option(help="Then deliver ground truth and a drift: monitor, alert, retrain"),
    ] = True,
    log: Annotated[
        str | None, typer.Option(help="Log URL, e.g. kafka://host:9092?partitions=4")
    ] = None,
    online: Annotated[
        str | None, typer.Option(help="Online store URL, e.g. redis://host:6379/0")
    ] = None,
    offline: Annotated[
        str | None, typer.Option(help="Offline store URL, e.g. s3://bucket/path")
    ] = None,
    metadata: Annotated[
        str | None,
        typer.Option(help="Metadata store URL, e.g. postgresql://user@host/db?schema=shop"),
    ] = None,
    auth: Annotated[
        bool,
        typer.Option(
            "--auth",
            help="Require API keys: every write goes through the server with the owning team's key",
        ),
    ] = False,
    now: Annotated[
        str | None,
        typer.Option(help="Run as of this ISO time, clock stopped: reruns give the same results"),
    ] = None,
) -> None:
    """Create the shop example, simulate weeks of activity, ingest, process, train, serve,
    and close the loop (ground truth, drift, monitor, alerts, retraining). It runs on the
    embedded stores, or on yours: --log, --online, --offline, --metadata (empty ones)."""
    chosen = {"log": log, "online": online, "offline": offline, "metadata": metadata}
    now_us = None if now is None else time_option(now, "--now")
    project = run_quickstart(
        folder,
        users=users,
        days=days,
        console=console,
        loop=loop,
        stores={port: url for port, url in chosen.items() if url is not None},
        now_us=now_us,
        auth=auth,
    )
    project.close()
