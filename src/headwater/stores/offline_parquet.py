"""Parquet files partitioned by stream and day, committed by an atomically replaced marker."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from headwater.definitions.types import from_micros
from headwater.definitions.windows import DAY

_PART = re.compile(r"^part-(?:p(\d+)-)?(\d+)-(\d+)\.parquet$")


class ParquetOfflineStore:
    """``root/stream=NAME/date=YYYY-MM-DD/part-START-END.parquet`` plus a commit marker,
    ``_committed.json``, for log partition 0; ``part-pN-START-END.parquet`` and
    ``_committed-pN.json`` for partition N > 0 (a log with one partition never writes them)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, stream: str) -> Path:
        return self.root / f"stream={stream}"

    def committed(self, stream: str, partition: int = 0) -> int:
        try:
            return int(json.loads((self._dir(stream) / _marker(partition)).read_text())["end"])
        except FileNotFoundError:
            return 0

    def append(
        self, stream: str, table: pa.Table, start: int, end: int, partition: int = 0
    ) -> None:
        base = self._dir(stream)
        base.mkdir(parents=True, exist_ok=True)
        self._remove_uncommitted(stream, partition)
        name = f"part-{start}-{end}" if partition == 0 else f"part-p{partition}-{start}-{end}"
        if table.num_rows:
            day_values = pa.array(table["_event_time"].to_numpy() // DAY)
            for day in pc.unique(day_values).to_pylist():
                part = table.filter(pc.equal(day_values, day))
                folder = base / f"date={_day_label(day)}"
                folder.mkdir(exist_ok=True)
                tmp = folder / f".{name}.tmp"
                pq.write_table(part, tmp, compression="zstd")
                _fsync(tmp)
                os.replace(tmp, folder / f"{name}.parquet")
        marker = base / (_marker(partition) + ".tmp")
        marker.write_text(json.dumps({"end": end}))
        _fsync(marker)
        os.replace(marker, base / _marker(partition))

    def _parts(self, stream: str) -> list[tuple[Path, int, int]]:
        """Every part file of the stream: (path, log partition, end offset)."""
        out = []
        for path in self._dir(stream).glob("date=*/part-*.parquet"):
            m = _PART.match(path.name)
            if m:
                out.append((path, int(m.group(1) or 0), int(m.group(3))))
        return out

    def _remove_uncommitted(self, stream: str, partition: int) -> None:
        committed = self.committed(stream, partition)
        for path, part_of, end in self._parts(stream):
            if part_of == partition and end > committed:
                path.unlink(missing_ok=True)

    def files(self, stream: str) -> list[str]:
        parts = self._parts(stream)
        committed = {p: self.committed(stream, p) for p in {p for _, p, _ in parts}}
        return sorted(str(path) for path, p, end in parts if end <= committed[p])


def _marker(partition: int) -> str:
    return "_committed.json" if partition == 0 else f"_committed-p{partition}.json"


def _day_label(day: int) -> str:
    return from_micros(day * DAY).strftime("%Y-%m-%d")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
