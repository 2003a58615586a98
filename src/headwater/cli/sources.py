"""``source``: feed streams from database tables and landing folders."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from headwater.cli.common import EnvOpt, ProjectOpt, app, console, err, iso, open_project
from headwater.sources.base import PollResult

source_app = typer.Typer(
    help="Sources: feed streams from database tables and landing folders.", no_args_is_help=True
)
app.add_typer(source_app, name="source")


@source_app.command("run")
def source_run(
    name: Annotated[str | None, typer.Argument(help="A source (default: every one)")] = None,
    forever: Annotated[bool, typer.Option(help="Keep polling; Ctrl-C to stop")] = False,
    every: Annotated[
        float | None, typer.Option(help="Seconds between polls (implies --forever)")
    ] = None,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Poll sources once, or forever: new table rows and landed files become events."""

    def report(results: list[PollResult], quiet: bool) -> None:
        for r in results:
            if r.error:
                err.print(f"[red]{r.summary()}[/red]")
            elif not quiet or r.read or r.problems:  # polling forever: only news
                console.print(r.summary())

    with open_project(project, env) as p:
        runner = p.source_runner()
        names = [runner.source(name).name] if name else None
        if not runner.sources:
            console.print("no sources declared; declare a TableSource or FolderSource")
            return
        try:
            if forever or every is not None:
                console.print("polling sources; Ctrl-C to stop")
                stop = threading.Event()
                try:
                    runner.run_forever(stop, every or 10.0, names, lambda rs: report(rs, True))
                except KeyboardInterrupt:
                    stop.set()
                return
            results = runner.poll(names)
        finally:
            runner.close()
    report(results, False)
    if any(r.error for r in results):
        raise typer.Exit(1)


@source_app.command("status")
def source_status(project: ProjectOpt = Path("."), env: EnvOpt = None) -> None:
    """Each source's stream, what it reads, and its checkpoint."""

    with open_project(project, env) as p:
        rows = p.source_runner().status()
    table = Table("source", "stream", "reads", "position", "events", "updated")
    for row in rows:
        updated = iso(row["updated_at"] or None)
        table.add_row(
            row["source"], row["stream"], row["reads"], row["position"], str(row["events"]), updated
        )
    console.print(table)


@source_app.command("reset")
def source_reset(
    name: Annotated[str, typer.Argument(help="The source to read again from its start")],
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Forget a source's checkpoint; its events keep their ids, so none is appended twice."""

    with open_project(project, env) as p:
        p.source_runner().reset(name)
    console.print(f"{name}: checkpoint reset; the next `headwater source run` reads from the start")
