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

_PART = re.compile(r"^part-(\d+)-(\d+)\.parquet$")
_CHECKPOINT = "_committed.json"


class ParquetOfflineStore:
    """``root/stream=NAME/date=YYYY-MM-DD/part-START-END.parquet`` plus a commit marker."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, stream: str) -> Path:
        return self.root / f"stream={stream}"

    def committed(self, stream: str) -> int:
        try:
            return int(json.loads((self._dir(stream) / _CHECKPOINT).read_text())["end"])
        except FileNotFoundError:
            return 0

    def append(self, stream: str, table: pa.Table, start: int, end: int) -> None:
        base = self._dir(stream)
        base.mkdir(parents=True, exist_ok=True)
        self._remove_uncommitted(stream)
        if table.num_rows:
            day_values = pa.array(table["_event_time"].to_numpy() // DAY)
            for day in pc.unique(day_values).to_pylist():
                part = table.filter(pc.equal(day_values, day))
                folder = base / f"date={_day_label(day)}"
                folder.mkdir(exist_ok=True)
                tmp = folder / f".part-{start}-{end}.tmp"
                pq.write_table(part, tmp, compression="zstd")
                _fsync(tmp)
                os.replace(tmp, folder / f"part-{start}-{end}.parquet")
        marker = base / (_CHECKPOINT + ".tmp")
        marker.write_text(json.dumps({"end": end}))
        _fsync(marker)
        os.replace(marker, base / _CHECKPOINT)

    def _parts(self, stream: str) -> list[tuple[Path, int]]:
        out = []
        for path in self._dir(stream).glob("date=*/part-*.parquet"):
            m = _PART.match(path.name)
            if m:
                out.append((path, int(m.group(2))))
        return out

    def _remove_uncommitted(self, stream: str) -> None:
        committed = self.committed(stream)
        for path, end in self._parts(stream):
            if end > committed:
                path.unlink(missing_ok=True)

    def files(self, stream: str) -> list[str]:
        committed = self.committed(stream)
        return sorted(str(p) for p, end in self._parts(stream) if end <= committed)


def _day_label(day: int) -> str:
    return from_micros(day * DAY).strftime("%Y-%m-%d")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
