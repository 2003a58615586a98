"""``features``, ``training-set`` and ``describe``: feature values online, over history, and
what a stream or a feature looks like."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import typer
from rich.table import Table

from headwater.cli.common import (
    EnvOpt,
    ProjectOpt,
    app,
    console,
    iso,
    names_option,
    open_project,
    time_option,
)
from headwater.definitions.types import from_micros, to_micros
from headwater.history.describe import describe_values, histogram
from headwater.privacy.mock import MOCK_SUFFIX

RECENT_US = 5 * 60 * 1_000_000  # --at: how far from now online values are asked for


def row_text(row: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in row.items())


@app.command()
def features(
    keys: Annotated[list[str], typer.Argument(metavar="KEY=VALUE...", help="The entity's keys")],
    names: Annotated[
        list[str],
        typer.Option("--features", "-f", help="Feature names: repeat -f, or a comma list"),
    ],
    at: Annotated[
        str | None,
        typer.Option(
            help="Evaluate at this time (ISO 8601), within the last 5 minutes; default: now. "
            "Online values are exact at now: for an earlier time, build a training set"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Print one entity's online feature values (`headwater features user_id=u1 -f spend_7d`)."""
    row = {}
    for key in keys:
        name, sep, value = key.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{key!r} is not KEY=VALUE", param_hint="KEY=VALUE")
        row[name] = value
    at_us = None if at is None else time_option(at, "--at")
    with open_project(project, env) as p:
        now = p.now()
        if at_us is not None and not now - RECENT_US <= at_us <= now + RECENT_US:
            raise typer.BadParameter(
                f"{at} is not within 5 minutes of now ({iso(now)}): online values are exact "
                "at now only; for another time, `headwater training-set` gives the value "
                "at any time",
                param_hint="--at",
            )
        when = None if at_us is None else from_micros(at_us)
        values = p.online_features(row, names_option(names), at=when)
    if as_json:
        print(orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode())
        return
    console.print(f"{row_text(row)} at {iso(at_us or now)}", highlight=False)
    table = Table("feature", "value")
    for name, value in values.items():
        table.add_row(name, _human(value, exact=True))
    console.print(table)


def _human(value: Any, exact: bool = False) -> str:
    """A value for people: times in ISO 8601 (UTC), numbers with 6 significant digits (or
    every digit, ``exact``)."""
    if value is None or (not isinstance(value, list | tuple | dict) and pd.isna(value)):
        return "-"
    if isinstance(value, datetime):
        return iso(to_micros(value))
    if isinstance(value, float):  # exact: as stored, less the float sum's last-bit noise
        return repr(round(value, 9)) if exact else f"{value:.6g}"
    return str(value) if isinstance(value, (int, str)) else repr(value)


@app.command("training-set")
def training_set(
    spine: Annotated[Path, typer.Argument(help="Spine: .parquet or .csv with keys and times")],
    names: Annotated[
        list[str],
        typer.Option("--features", "-f", help="Feature names: repeat -f, or a comma list"),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .parquet or .csv")],
    time_column: Annotated[str, typer.Option(help="The spine's time column")] = "timestamp",
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Build a point-in-time-correct training set for a spine file."""
    if not spine.is_file():
        raise typer.BadParameter(f"no such file: {spine}", param_hint="SPINE")
    if spine.suffix not in (".parquet", ".csv") or out.suffix not in (".parquet", ".csv"):
        bad = spine if spine.suffix not in (".parquet", ".csv") else out
        raise typer.BadParameter(
            f"{bad}: give a .parquet or .csv file", param_hint="SPINE" if bad == spine else "--out"
        )
    table = pq.read_table(spine) if spine.suffix == ".parquet" else pcsv.read_csv(spine)
    start = time.perf_counter()
    with open_project(project, env) as p:
        result = p.training_set(table, names_option(names), time_column=time_column, output="arrow")
    if out.suffix == ".csv":
        nested = [f.name for f in result.schema if pa.types.is_nested(f.type)]
        if nested:
            raise typer.BadParameter(
                f"CSV cannot hold the lists of {', '.join(nested)}: write .parquet",
                param_hint="--out",
            )
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
    sample: Annotated[
        int, typer.Option(min=1, help="Entities x times sampled for a feature")
    ] = 2000,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Summary statistics, null rates and a text histogram of a stream or a feature."""
    with open_project(project, env) as p:
        d = p.definitions
        if name not in d.streams and (name in d.labels or name in d.models):
            kind = "label" if name in d.labels else "model"
            raise typer.BadParameter(
                f"{name!r} is a {kind}; describe takes a stream or a feature "
                f"(`headwater {'train' if kind == 'model' else 'training-set'}` for a {kind})",
                param_hint="NAME",
            )
        if name in d.streams:
            found = p.describe_stream(name)
            console.print(f"stream {name} (owner {found.stream.owner}): {found.stream.description}")
            fields = Table(
                "field",
                "type",
                "pii",
                "count",
                "null rate",
                "distinct",
                "min",
                "max",
                "mean",
                "latest",
            )
            example = found.example or {}
            mocked = set(example.get("_mock", ()))
            for row in found.fields.itertuples(index=False):
                value = example.get(row.field)
                if row.type == "timestamp" and isinstance(value, int):
                    value = iso(value)
                latest = "" if value is None else str(value)
                fields.add_row(
                    row.field,
                    row.type,
                    "yes" if row.pii else "",
                    f"{row.count:,}",
                    f"{row.null_rate:.1%}",
                    f"{row.distinct:,}",
                    _human(row.min),
                    _human(row.max),
                    _human(row.mean),
                    latest + (MOCK_SUFFIX if row.field in mocked else ""),
                )
            console.print(fields)
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
