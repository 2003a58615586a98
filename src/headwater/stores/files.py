"""Files under a local folder or any URL fsspec understands, published whole: a local folder
writes a temporary file, fsyncs it and renames it into place; an object store, which has no
atomic rename, makes each object visible whole by a single write."""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.ipc


class Files(Protocol):
    """Files under a local folder or an fsspec URL: the few operations the stores need."""

    def read_text(self, path: str) -> str | None: ...
    def read_bytes(self, path: str) -> bytes: ...
    def exists(self, path: str) -> bool: ...
    def find(self, folder: str) -> list[str]: ...  # every file below, at any depth
    def size(self, path: str) -> int: ...  # bytes
    def modified(self, path: str) -> float: ...  # seconds since the epoch
    def publish(self, path: str, data: bytes) -> None: ...  # whole or not at all
    def glob(self, folder: str, pattern: str) -> list[str]: ...
    def remove(self, path: str) -> None: ...
    def location(self, path: str) -> str: ...  # what ``files`` hands to readers
    def publish_table(self, path: str, table: pa.Table) -> None: ...  # Arrow IPC, whole
    def open_table(self, path: str) -> pa.Table: ...  # memory-mapped where it can be


class LocalFiles:
    """A local folder: write a temporary file, fsync it, rename it into place."""

    def read_text(self, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except FileNotFoundError:
            return None

    def read_bytes(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def exists(self, path: str) -> bool:
        return Path(path).is_file()

    def find(self, folder: str) -> list[str]:
        return [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files]

    def size(self, path: str) -> int:
        return Path(path).stat().st_size

    def modified(self, path: str) -> float:
        return Path(path).stat().st_mtime

    def publish(self, path: str, data: bytes) -> None:
        self._publish(path, lambda tmp: tmp.write_bytes(data))

    @staticmethod
    def _publish(path: str, write: Callable[[Path], object]) -> None:
        """``write`` a temporary file beside ``path``, fsync it, rename it into place."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        write(tmp)
        fsync(tmp)
        os.replace(tmp, target)

    def glob(self, folder: str, pattern: str) -> list[str]:
        # the glob module lists with os.scandir: a third of pathlib's time over 3,690 files
        return glob.glob(os.path.join(glob.escape(folder), pattern))

    def remove(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def location(self, path: str) -> str:
        return path

    def publish_table(self, path: str, table: pa.Table) -> None:
        def write(tmp: Path) -> None:  # streamed to the file: no second copy in memory
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
                out.write_table(table)

        self._publish(path, write)

    def open_table(self, path: str) -> pa.Table:
        # uncompressed and memory-mapped: a reader pages in only the columns it touches
        with pa.memory_map(path, "r") as source:
            return pa.ipc.open_file(source).read_all()


class FsspecFiles:
    """Any fsspec filesystem. Object stores have no atomic rename, so each file is written
    once under its final name: one PUT makes an object visible whole or not at all, and a
    part file counts only once the marker, written after it, covers its offsets."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def read_text(self, path: str) -> str | None:
        try:
            return bytes(self.fs.cat_file(path)).decode()
        except FileNotFoundError:
            return None

    def read_bytes(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(path))

    def exists(self, path: str) -> bool:
        return bool(self.fs.isfile(path))

    def find(self, folder: str) -> list[str]:
        return [str(p) for p in self.fs.find(folder)]

    def size(self, path: str) -> int:
        return int(self.fs.size(path))

    def modified(self, path: str) -> float:
        return float(self.fs.modified(path).timestamp())

    def publish(self, path: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(path, data)
        except FileNotFoundError:  # a filesystem with real folders (object stores have none)
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(path, data)

    def glob(self, folder: str, pattern: str) -> list[str]:
        return [str(p) for p in self.fs.glob(f"{folder}/{pattern}")]

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def location(self, path: str) -> str:
        return str(self.fs.unstrip_protocol(path))

    def publish_table(self, path: str, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        self.publish(path, sink.getvalue().to_pybytes())

    def open_table(self, path: str) -> pa.Table:
        return pa.ipc.open_file(pa.py_buffer(self.read_bytes(path))).read_all()


def open_files(root: str | Path, options: Mapping[str, Any] | None = None) -> tuple[Files, str]:
    """The files under ``root`` (a local folder, a ``file://`` URL or any fsspec URL) and
    ``root`` as their paths begin; ``options`` go to the fsspec filesystem."""
    text = str(root)
    if "://" not in text or text.startswith("file://"):
        local = Path(text.removeprefix("file://"))
        local.mkdir(parents=True, exist_ok=True)
        return LocalFiles(), str(local)
    from fsspec.core import url_to_fs  # only remote roots need fsspec

    fs, path = url_to_fs(text, **dict(options or {}))
    return FsspecFiles(fs), str(path).rstrip("/")


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
