"""Polling a folder source: ingest each complete file once, checkpointed per file."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from headwater.definitions.source import FolderSource
from headwater.ingestion.files import EventFileError, file_format, read_batches
from headwater.ingestion.service import IngestResult
from headwater.sources.base import FOLDER_FILES, PollResult, SourceError
from headwater.stores.metadata.base import MetadataStore

Ingest = Callable[[str, list[Any]], IngestResult]
# Names a writer uses while a file is incomplete: never read (write under one, then rename).
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")


def is_partial_name(name: str) -> bool:
    """Whether a name is one a writer gives a file until it is complete.

    >>> [is_partial_name(n) for n in ("a.jsonl", ".a.jsonl", "_a.jsonl", "a.jsonl.tmp")]
    [False, True, True, True]
    """
    return name.startswith((".", "_")) or name.lower().endswith(PARTIAL_SUFFIXES)


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def row_id(name: str, index: int, row: Mapping[str, Any]) -> str:
    """A file row's event id, from the file's name, the row's place and its content: reading
    the file again (after a crash, or a copy with more rows appended) appends nothing twice,
    while a row whose content changed is a new event."""
    content = orjson.dumps(row, option=orjson.OPT_SORT_KEYS, default=str)
    text = b"\0".join((name.encode(), str(index).encode(), content))
    return hashlib.sha256(text).hexdigest()[:32]


class FolderPoller:
    """Finds the complete, unseen files of a folder source and ingests each one; a file's
    checkpoint (name, size, modification time, content hash) is saved only after all its
    events are durable in the log."""

    def __init__(
        self,
        source: FolderSource,
        root: Path,
        ingest: Ingest,
        metadata: MetadataStore,
        clock: Callable[[], int],
    ) -> None:
        self.source, self._ingest, self._metadata, self._clock = source, ingest, metadata, clock
        self.folder = source.path if source.path.is_absolute() else root / source.path
        self.collection = f"{FOLDER_FILES}/{source.name}"

    def checkpoint(self) -> dict[str, dict[str, Any]]:
        """The files taken so far, by name relative to the folder."""
        records = self._metadata.get_records(self.collection)
        return {name: doc for name, doc in records.items() if not doc.get("forgotten")}

    def poll(self, result: PollResult) -> None:
        seen = self.checkpoint()
        settle_ns = (self.source.settle_us or 0) * 1000
        for name, path, stat in self._candidates():
            old = seen.get(name)
            if old and (old["size"], old["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
                continue
            if time.time_ns() - stat.st_mtime_ns < settle_ns:
                result.waiting += 1  # still being written, perhaps: wait for it to settle
                continue
            digest = content_hash(path)
            doc = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
            if old and old.get("sha256") == digest:
                self._save(name, {**old, **doc})  # touched, not changed
                continue
            doc |= self._ingest_file(name, path, result)
            if _stat_key(path) != (stat.st_size, stat.st_mtime_ns):
                result.waiting += 1  # it changed while read: read it again once it settles
                continue
            self._save(name, doc)
            if "error" not in doc:
                result.files += 1

    def reset(self) -> None:
        """Forget every file taken, so each is read again (its events keep their ids)."""
        self._metadata.put_records(
            [(self.collection, name, {"forgotten": True}) for name in self.checkpoint()]
        )

    def _candidates(self) -> Iterator[tuple[str, Path, os.stat_result]]:
        if not self.folder.is_dir():
            raise SourceError(
                f"source {self.source.name!r}: no folder {self.folder}; create it or fix path="
            )
        found = []
        for path in self.folder.glob(self.source.pattern):
            name = path.relative_to(self.folder).as_posix()
            if any(is_partial_name(part) for part in name.split("/")):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # renamed or removed since listed
            if path.is_file():
                found.append((stat.st_mtime_ns, name, path, stat))
        for _, name, path, stat in sorted(found, key=lambda f: (f[0], f[1])):
            yield name, path, stat

    def _ingest_file(self, name: str, path: Path, result: PollResult) -> dict[str, Any]:
        stream = self.source.stream
        counts: dict[str, Any] = {"events": 0, "accepted": 0, "duplicates": 0, "rejected": 0}
        index = 0
        try:
            for batch in _batches(path, self.source.format):
                events = []
                for raw in batch:
                    if isinstance(raw, Mapping) and raw.get(stream.id_field) is None:
                        raw = {**raw, stream.id_field: row_id(name, index, raw)}
                    events.append(raw)
                    index += 1
                ingested = self._ingest(stream.name, events)
                rejected = len(ingested.rejected)
                result.add(ingested.accepted, ingested.duplicates, rejected, len(events))
                counts["events"] += len(events)
                counts["accepted"] += ingested.accepted
                counts["duplicates"] += ingested.duplicates
                counts["rejected"] += rejected
        except UnreadableFileError as exc:
            # reported once and kept with its error: landing a fixed copy (a new size or
            # time) reads it again; a failing ingest, by contrast, raises and saves nothing
            result.problems.append(f"{name}: {exc}")
            counts["error"] = str(exc)
        return {**counts, "ingested_at": self._clock()}

    def _save(self, name: str, doc: dict[str, Any]) -> None:
        self._metadata.put_records([(self.collection, name, doc)])


class UnreadableFileError(SourceError):
    """A landed file cannot be read as events (unknown format, corrupt Parquet, bad CSV)."""


def _batches(path: Path, fmt: str | None) -> Iterator[list[Any]]:
    try:
        fmt = file_format(path, fmt)
    except EventFileError:
        raise UnreadableFileError(
            f"cannot tell the format of {path.name}; name it .jsonl, .csv or .parquet, or set "
            "the source's format= (or narrow its pattern=)"
        ) from None
    try:
        yield from read_batches(path, fmt)
    except (EventFileError, OSError, ValueError) as exc:  # pyarrow's errors are ValueErrors
        raise UnreadableFileError(str(exc)) from exc


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns
