"""``ingest`` and ``process``: events into the log, and the log into the online store."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from headwater.cli.common import (
    EnvOpt,
    ProjectOpt,
    app,
    console,
    err,
    iso,
    open_project,
    progress_bar,
)
from headwater.errors import HeadwaterError
from headwater.ingestion.files import count_events, file_format, read_batches
from headwater.privacy.mock import MOCK_SUFFIX


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="Events: .jsonl, .csv or .parquet")],
    stream: Annotated[str, typer.Option("--stream", "-s", help="Stream to append to")],
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl, csv or parquet")] = None,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Validate and append the events of a file; rejected ones go to the dead-letter stream."""
    fmt = file_format(file, fmt)
    accepted = duplicates = rejected = 0
    with open_project(project, env) as p, progress_bar() as bar:
        p.ingestor.stream(stream)
        task = bar.add_task(f"ingest {file.name}", total=count_events(file, fmt))
        for batch in read_batches(file, fmt):
            result = p.ingest(stream, batch)
            accepted += result.accepted
            duplicates += result.duplicates
            rejected += len(result.rejected)
            for r in result.rejected[:3]:
                err.print(f"[yellow]rejected[/yellow] event {r.index}: {r.reason}")
            bar.advance(task, len(batch))
    console.print(
        f"{accepted} accepted, {duplicates} duplicates, {rejected} rejected "
        f"(see stream _dead_letter)"
    )
    if rejected and not accepted:
        raise typer.Exit(1)


@app.command()
def process(
    forever: Annotated[bool, typer.Option(help="Keep processing new events")] = False,
    workers: Annotated[
        int, typer.Option(help="With --forever: worker processes sharing the log's partitions")
    ] = 1,
    group: Annotated[
        str | None,
        typer.Option(
            help="With --forever on Kafka: the consumer group whose members share the "
            "partitions (default: headwater.<project name>.processor)"
        ),
    ] = None,
    rebuild: Annotated[
        bool,
        typer.Option(help="First clear the feature sets' online state, then replay the whole log"),
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Log records read and applied at a time")] = (
        100_000
    ),
    commit_seconds: Annotated[
        float,
        typer.Option(
            help="Behind a backlog, commit each partition's states and checkpoints this often "
            "(a batch that finds the partition caught up is committed at once); 0: every batch"
        ),
    ] = 5.0,
    cached_states: Annotated[
        int,
        typer.Option(
            help="Decoded entity states kept in memory between batches, uncommitted ones "
            "included (a partition with more uncommitted states commits)"
        ),
    ] = 200_000,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Update the online store from the log, from each feature set's checkpoint."""
    with open_project(project, env) as p:
        if forever:
            stop = threading.Event()

            def interrupted(*_: object) -> None:
                if stop.is_set():
                    raise KeyboardInterrupt  # a second Ctrl-C: quit now, uncommitted work replays
                stop.set()
                console.print("stopping after the batch in flight, committing what was processed")

            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, interrupted)
            console.print("processing; Ctrl-C to stop (twice to quit at once)")
            try:
                p.process(
                    forever=True,
                    stop=stop,
                    workers=workers,
                    group=group,
                    rebuild=rebuild,
                    batch_size=batch_size,
                    commit_seconds=commit_seconds,
                    cached_states=cached_states,
                )
            except KeyboardInterrupt:
                stop.set()
            return
        if workers != 1 or group is not None:
            raise HeadwaterError("--workers and --group share --forever processing; add --forever")
        if rebuild:
            p.clear_online()
            console.print("cleared the online state of the feature sets; replaying the log")
        lag = sum(p.lag().values())
        start = time.perf_counter()
        with progress_bar() as bar:
            task = bar.add_task("process", total=lag)
            stats = p.process(
                progress=lambda n: bar.advance(task, n),
                batch_size=batch_size,
                commit_seconds=commit_seconds,
                cached_states=cached_states,
            )
        seconds = time.perf_counter() - start
        console.print(f"processed {stats.events} events in {seconds:.2f}s")


@app.command()
def sample(
    stream: Annotated[str, typer.Argument(help="The stream")],
    n: Annotated[int, typer.Option("-n", min=1, max=1000, help="How many events")] = 10,
    pseudonyms: Annotated[
        bool, typer.Option(help="Show PII fields as stored (pseudonyms), not as mock values")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """The latest events of a stream as its log holds them; pseudonymized PII fields show
    realistic fakes, stable per pseudonym and marked (mock)."""
    with open_project(project, env) as p:
        events = p.sample_events(stream, n, mock=not pseudonyms)
        fields = p.definitions.streams[stream].fields
        id_field = p.definitions.streams[stream].id_field
    if as_json:
        for event in events:
            print(orjson.dumps(event).decode())
        return
    if not events:
        console.print(f"stream {stream} has no events")
        return
    times = {f for f, spec in fields.items() if spec.dtype.value == "timestamp"}
    hidden = ("_event_id", "_event_time", "_mock", id_field)  # the id is the first column
    names = list(dict.fromkeys(k for e in events for k in e if k not in hidden))
    table = Table("event id", *names)
    for event in events:
        mocked = set(event.get("_mock", ()))
        cells = []
        for name in names:
            value = event.get(name)
            if name in times and isinstance(value, int):
                value = iso(value)
            text = "" if value is None else str(value)
            cells.append(text + (MOCK_SUFFIX if name in mocked else ""))
        table.add_row(event["_event_id"], *cells)
    console.print(table)
