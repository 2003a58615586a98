"""``environments`` and ``replay``: a project's environments, and copying one's log into
another's."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from headwater.cli.common import (
    EnvOpt,
    ProjectOpt,
    app,
    console,
    err,
    names_option,
    open_project,
    time_option,
)
from headwater.definitions.source import redact_url
from headwater.environments.replay import ReplayOptions, ReplayStats
from headwater.ingestion.files import write_events
from headwater.project.config import declared_environments, load_settings


@app.command()
def environments(project: ProjectOpt = Path(".")) -> None:
    """The project's environments: namespace and stores of each."""
    declared = declared_environments(project)
    table = Table("environment", "namespace", "store", "url")
    for name in declared or ("default",):
        s = load_settings(project, name if declared else None, environ={})
        for i, (port, url) in enumerate(vars(s.stores).items()):
            first = i == 0
            table.add_row(
                name if first else "",
                (s.environment.namespace or "-") if first else "",
                port,
                redact_url(url),
            )
    console.print(table)


def _share(text: str) -> float:
    """``10%`` or ``0.1`` as a share of entities."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a share: write 10% or 0.1", param_hint="--sample-entities"
        ) from None
    if not 0 < value <= 1:
        raise typer.BadParameter(
            "give a share above 0% and at most 100%", param_hint="--sample-entities"
        )
    return value


@app.command()
def replay(
    source: Annotated[str, typer.Option("--from", help="The environment to copy from")],
    target: Annotated[str, typer.Option("--to", help="The environment to copy into")],
    since: Annotated[
        str | None, typer.Option(help="Only events at or after this time (ISO 8601 or epoch s)")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Only events before this time")] = None,
    streams: Annotated[
        list[str] | None,
        typer.Option("--streams", help="Streams to copy (repeat or comma list); default: all"),
    ] = None,
    sample_entities: Annotated[
        str | None,
        typer.Option(
            help="Copy this share of entities whole (10% or 0.1), by a hash of each event's "
            "first key value"
        ),
    ] = None,
    rekey: Annotated[
        bool,
        typer.Option(help="Re-key PII pseudonyms as HMAC(target secret, source pseudonym)"),
    ] = False,
    include_internal: Annotated[
        bool,
        typer.Option(help="Also copy the platform's own streams (predictions, alerts, ...)"),
    ] = False,
    append: Annotated[
        bool, typer.Option(help="Add to a target that holds other events already")
    ] = False,
    follow: Annotated[
        bool, typer.Option(help="Keep copying new events until stopped (Ctrl-C)")
    ] = False,
    batch_size: Annotated[
        int, typer.Option(help="Events read, appended and checkpointed at a time")
    ] = 5000,
    to_project: Annotated[
        Path | None,
        typer.Option(help="The target's project folder, when it is another project"),
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Copy the log of one environment into another's (event ids, event times, order per
    key), checkpointed: run it again after an interruption and it resumes, adding nothing
    twice. Then `headwater process --env TARGET` builds the target's online state."""
    options = ReplayOptions(
        since_us=None if since is None else time_option(since, "--since"),
        until_us=None if until is None else time_option(until, "--until"),
        sample=None if sample_entities is None else _share(sample_entities),
        rekey=rekey,
    )
    with (
        open_project(project, source) as src,
        open_project(to_project or project, target) as dst,
    ):
        run = src.replay_into(
            dst,
            streams=names_option(streams or []) or None,
            include_internal=include_internal,
            options=options,
            append=append,
            batch=batch_size,
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=err,
        ) as bar:
            task = bar.add_task(f"replay {source} → {target}", total=run.lag(), rate="")

            def advance(n: int) -> None:
                bar.advance(task, n)
                speed = bar.tasks[task].speed
                bar.update(task, rate=f"{speed:,.0f} events/s" if speed else "")

            if follow:
                err.print("following the source; Ctrl-C to stop")

                def caught_up(_: ReplayStats) -> None:
                    bar.update(task, total=bar.tasks[task].completed + run.lag())

                stats = run.follow(stop, progress=advance, on_pass=caught_up)
            else:
                stats = run.run(advance, stop)
    parts = [f"copied {stats.copied} events"]
    if stats.filtered:
        parts.append(f"{stats.filtered} outside the range or sample")
    if stats.resumed:
        parts.append(f"{stats.resumed} already in the target from an interrupted run")
    console.print(", ".join(parts) + f" in {stats.seconds:.1f}s ({stats.rate:,.0f} events/s)")
    for name, count in sorted(stats.streams.items()):
        console.print(f"  {name}: {count}")
    if stop.is_set() and not follow:
        console.print("interrupted: run the same command again to resume")
    else:
        console.print(f"next: headwater process --env {target} (builds its online state)")


@app.command()
def mock(
    stream: Annotated[str, typer.Argument(help="The stream")],
    rows: Annotated[int, typer.Option("--rows", "-n", min=1, help="How many events")] = 1000,
    like: Annotated[
        str | None,
        typer.Option(help="Draw values as observed in this environment (default: this one)"),
    ] = None,
    entities: Annotated[
        int | None, typer.Option(min=1, help="Distinct entities (default: as observed)")
    ] = None,
    days: Annotated[
        float | None, typer.Option(help="Days the events span, ending now (default: as observed)")
    ] = None,
    seed: Annotated[int, typer.Option(help="The same seed gives the same events")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Write them to this .jsonl, .csv or .parquet file")
    ] = None,
    ingest: Annotated[
        bool, typer.Option(help="Ingest them into this environment (validated, PII protected)")
    ] = False,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Realistic events of a stream for an environment with no production data: numbers and
    categories as observed (in --like, or here), PII fields as realistic fakes, keys
    mock-000001...; nothing of a real person."""
    with open_project(project, env) as p:
        if like is not None:
            with open_project(project, like) as source:
                events = p.mock_events(
                    stream, rows, like=source, entities=entities, days=days, seed=seed
                )
        else:
            events = p.mock_events(stream, rows, entities=entities, days=days, seed=seed)
        if out is not None:
            write_events(events, out)
            console.print(f"wrote {len(events)} mock events of {stream} to {out}")
        if ingest:
            result = p.ingest(stream, events)
            console.print(
                f"ingested {result.accepted} mock events into {stream} "
                f"({result.duplicates} duplicates, {len(result.rejected)} rejected)"
            )
        if out is None and not ingest:
            table = Table(*events[0])
            for event in events[:20]:
                table.add_row(*("" if v is None else str(v) for v in event.values()))
            console.print(table)
            console.print(
                f"{len(events)} mock events (the first {min(20, len(events))} shown); write "
                "them with --out FILE or ingest them with --ingest"
            )
