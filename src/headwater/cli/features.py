"""``features``, ``training-set`` and ``describe``: feature values online, over history, and
what a stream or a feature looks like."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import typer
from rich.table import Table

from headwater.cli.common import ProjectOpt, app, console, open_project
from headwater.history.describe import describe_values, histogram


@app.command()
def features(
    keys: Annotated[list[str], typer.Argument(help="Entity keys as name=value")],
    names: Annotated[str, typer.Option("--features", "-f", help="Comma-separated names")],
    project: ProjectOpt = Path("."),
) -> None:
    """Print online feature values for one entity, e.g. `headwater features user_id=u1 -f x`."""
    row = dict(k.split("=", 1) for k in keys if "=" in k)
    with open_project(project) as p:
        values = p.online_features(row, [n.strip() for n in names.split(",") if n.strip()])
    table = Table("feature", "value")
    for name, value in values.items():
        table.add_row(name, repr(value))
    console.print(table)


@app.command("training-set")
def training_set(
    spine: Annotated[Path, typer.Argument(help="Spine: .parquet or .csv with keys and times")],
    names: Annotated[str, typer.Option("--features", "-f", help="Comma-separated names")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .parquet or .csv")],
    time_column: Annotated[str, typer.Option(help="The spine's time column")] = "timestamp",
    project: ProjectOpt = Path("."),
) -> None:
    """Build a point-in-time-correct training set for a spine file."""
    table = pq.read_table(spine) if spine.suffix == ".parquet" else pcsv.read_csv(spine)
    start = time.perf_counter()
    with open_project(project) as p:
        result = p.training_set(
            table, [n.strip() for n in names.split(",")], time_column=time_column, output="arrow"
        )
    if out.suffix == ".csv":
        pcsv.write_csv(result, out)
    else:
        pq.write_table(result, out)
    console.print(
        f"{result.num_rows} rows x {result.num_columns} columns -> {out} "
        f"in {time.perf_counter() - start:.2f}s"
    )


@app.command()
def describe(
    name: Annotated[str, typer.Argument(help="A stream or a feature")],
    sample: Annotated[int, typer.Option(help="Entities x times sampled for a feature")] = 2000,
    project: ProjectOpt = Path("."),
) -> None:
    """Summary statistics, null rates and a text histogram of a stream or a feature."""
    with open_project(project) as p:
        if name in p.definitions.streams:
            found = p.describe_stream(name)
            console.print(f"stream {name} (owner {found.stream.owner}): {found.stream.description}")
            console.print(found.fields.to_string(index=False))
            for line in found.copies:
                console.print(line)
            return
        values = p.describe_feature(name, sample)
    stats = describe_values(values)
    console.print(
        f"feature {name} over {stats['count']:,} sampled (entity, time) rows: "
        + ", ".join(f"{k}={v}" for k, v in stats.items() if k != "count")
    )
    for line in histogram(values):
        console.print(line)
