"""Reading event files (JSON lines, CSV, Parquet) in batches, for ``headwater ingest``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from headwater.errors import HeadwaterError

FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class EventFileError(HeadwaterError):
    """An event file cannot be read."""


def file_format(path: Path, given: str | None = None) -> str:
    fmt = given or FORMATS.get(path.suffix.lower())
    if fmt not in ("jsonl", "csv", "parquet"):
        raise EventFileError(
            f"cannot tell the format of {path.name}; name it .jsonl, .csv or .parquet, "
            "or pass --format"
        )
    return fmt


def count_events(path: Path, fmt: str) -> int | None:
    if fmt == "parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    if fmt == "jsonl":
        with path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())
    return None


def read_batches(path: Path, fmt: str, batch_size: int = 10_000) -> Iterator[list[Any]]:
    """Yield lists of raw events. A JSON line that does not parse is yielded as an
    ``InvalidLine`` so that ingestion rejects it with its reason and keeps the rest."""
    if not path.is_file():
        raise EventFileError(f"no such file: {path}")
    if fmt == "parquet":
        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
            yield pa.Table.from_batches([record_batch]).to_pylist()
    elif fmt == "csv":
        reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 22))
        for record_batch in reader:
            yield pa.Table.from_batches([record_batch]).to_pylist()
    else:
        batch: list[Any] = []
        with path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    batch.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    batch.append(InvalidLine(number, str(exc)))
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch


class InvalidLine(str):
    """A line of a JSON-lines file that is not JSON; rejected like any invalid event."""

    def __new__(cls, number: int, reason: str) -> InvalidLine:
        return super().__new__(cls, f"line {number} is not valid JSON: {reason}")


def write_events(events: list[dict[str, Any]], path: Path) -> None:
    """Write events to a file that ``headwater ingest`` reads back (by its suffix)."""
    fmt = file_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("wb") as fh:
            for event in events:
                fh.write(orjson.dumps(event) + b"\n")
        return
    table = pa.Table.from_pylist(events)
    if fmt == "csv":
        pcsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
