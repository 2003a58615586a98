"""``score`` and ``scheduler``: batch scoring now, and what cron schedules make due."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import typer

from headwater.cli.common import (
    EnvOpt,
    ProjectOpt,
    app,
    console,
    open_project,
    progress_bar,
    time_option,
)
from headwater.serving.batch_scoring import write_scores


@app.command()
def scheduler(
    once: Annotated[bool, typer.Option(help="Run what is due now, then exit")] = False,
    every: Annotated[float, typer.Option(help="Seconds between checks")] = 60.0,
    jobs: Annotated[int, typer.Option(min=1, help="Train due models in N processes at a time")] = 1,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Run the training pipelines of models, and the batch scoring of services, whose cron
    schedule is due (due models train together: one training set for models that learn from
    the same examples)."""
    with open_project(project, env) as p:
        while True:
            trained, scored = p.run_scheduled(console.print, jobs)
            for name, outcome in trained:
                console.print(f"{name}: {outcome}")
            for name, outcome in scored:
                console.print(
                    f"{name}: {outcome} scored"
                    if isinstance(outcome, int)
                    else f"{name}: {outcome}"
                )
            if once:
                return
            time.sleep(every)


@app.command()
def score(
    service: Annotated[str, typer.Argument(help="Service to score with")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .parquet or .csv")],
    entities: Annotated[
        Path | None,
        typer.Option(
            help="A .csv or .parquet of entity keys (and optionally times); default: every entity"
        ),
    ] = None,
    at: Annotated[str | None, typer.Option(help="Score as of this ISO time (default: now)")] = None,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Batch scoring: features from the offline store as of a time, every prediction logged."""
    at_us = None if at is None else time_option(at, "--at")
    table = None
    if entities is not None:
        read = pq.read_table if entities.suffix == ".parquet" else pcsv.read_csv
        table = read(entities).to_pandas()
    with open_project(project, env) as p:
        start = time.perf_counter()
        with progress_bar() as bar:
            task = bar.add_task(f"score {service}", total=None)
            result = p.score_entities(
                service, at=at_us, entities=table, progress=lambda n: bar.advance(task, n)
            )
    write_scores(result, out)
    console.print(
        f"scored {len(result):,} entities in {time.perf_counter() - start:.1f}s -> "
        f"{out}; predictions logged to the 'predictions' stream"
    )
