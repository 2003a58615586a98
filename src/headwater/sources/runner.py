"""Running a project's sources: poll each once, or keep polling; report their checkpoints."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from headwater.definitions.source import ChangeSource, FolderSource, Source, TableSource
from headwater.errors import HeadwaterError, did_you_mean
from headwater.sources.base import ChangeReader, PollResult, SourceError, TableReader
from headwater.sources.changes import ChangePoller
from headwater.sources.folder import FolderPoller
from headwater.sources.table import Ingest, TablePoller, open_reader
from headwater.stores.metadata.base import MetadataStore


class SourceRunner:
    """Polls the sources a project declares. Events go through ``Project.ingest`` (validated
    against their stream, invalid ones dead-lettered, duplicates recognized by event id), and
    each source's checkpoint lives in the project's metadata store, so a restarted runner
    resumes where the last one stopped. Run one runner per source at a time.

    ``runner.poll()`` polls every source once; ``poll("orders_db")`` one. ``root`` is the
    project folder (relative folder sources are under it).
    """

    def __init__(
        self,
        sources: Mapping[str, Source],
        ingest: Ingest,
        metadata: MetadataStore,
        clock: Callable[[], int],
        root: Path,
    ) -> None:
        self.sources = sources
        self._ingest, self._metadata, self._now, self._root = ingest, metadata, clock, root
        self._readers: dict[str, TableReader] = {}

    def source(self, name: str) -> Source:
        try:
            return self.sources[name]
        except KeyError:
            raise SourceError(
                f"unknown source {name!r}"
                + did_you_mean(name, list(self.sources))
                + f" (sources: {', '.join(sorted(self.sources)) or 'none'})"
            ) from None

    def poll(self, names: Sequence[str] | None = None) -> list[PollResult]:
        """Poll the named sources (default: all) once, each until it is caught up. A source
        that fails (its database is down) is reported in its result; the others still run."""
        chosen = [self.source(n) for n in names] if names else list(self.sources.values())
        results = []
        for source in chosen:
            result = PollResult(source.name)
            try:
                self._poller(source).poll(result)
            except HeadwaterError as exc:
                result.error = str(exc)
            results.append(result)
        return results

    def run_forever(
        self,
        stop: threading.Event,
        every: float,
        names: Sequence[str] | None = None,
        report: Callable[[list[PollResult]], None] | None = None,
    ) -> None:
        """Poll, wait ``every`` seconds, poll again, until ``stop`` is set."""
        while not stop.is_set():
            results = self.poll(names)
            if report is not None:
                report(results)
            stop.wait(every)

    def status(self) -> list[dict[str, Any]]:
        """Each source's definition and checkpoint, for people."""
        out = []
        for source in self.sources.values():
            row: dict[str, Any] = {"source": source.name, "stream": source.stream.name}
            if isinstance(source, TableSource):
                doc = self._table(source).checkpoint() or {}
                position = doc.get("position")
                row |= {
                    "reads": f"table {source.table} by ({', '.join(source.order_by)})",
                    "position": "start" if position is None else str(position),
                    "events": doc.get("rows", 0),
                    "updated_at": doc.get("updated_at"),
                }
            elif isinstance(source, ChangeSource):
                doc = self._changes(source).checkpoint() or {}
                position = doc.get("position")
                row |= {
                    "reads": f"changes of table {source.table} (capture trigger)",
                    "position": (
                        "start"
                        if not doc.get("installed")
                        else "after the snapshot"
                        if position is None
                        else f"transaction {position[0]}, change {position[1]}"
                    ),
                    "events": doc.get("rows", 0),
                    "updated_at": doc.get("updated_at"),
                }
            elif isinstance(source, FolderSource):
                folder = self._folder(source)
                files = folder.checkpoint().values()
                row |= {
                    "reads": f"folder {folder.folder / source.pattern}",
                    "position": f"{len(files)} files",
                    "events": sum(f.get("events", 0) for f in files),
                    "updated_at": max((f.get("ingested_at", 0) for f in files), default=None),
                }
            out.append(row)
        return out

    def reset(self, name: str) -> None:
        """Forget a source's checkpoint: its next poll reads everything again. Events keep
        their ids, so a log that deduplicates by id (the embedded one) appends nothing twice."""
        self._poller(self.source(name)).reset()

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def _poller(self, source: Source) -> TablePoller | ChangePoller | FolderPoller:
        if isinstance(source, TableSource):
            return self._table(source)
        if isinstance(source, ChangeSource):
            return self._changes(source)
        if isinstance(source, FolderSource):
            return self._folder(source)
        raise SourceError(f"source {source.name!r}: {type(source).__name__} cannot be polled")

    def _reader(self, url: str) -> TableReader:
        reader = self._readers.get(url)
        if reader is None:
            reader = self._readers[url] = open_reader(url, self._root)
        return reader

    def _table(self, source: TableSource) -> TablePoller:
        return TablePoller(
            source, self._reader(source.url), self._ingest, self._metadata, self._now
        )

    def _changes(self, source: ChangeSource) -> ChangePoller:
        reader = self._reader(source.url)
        if not isinstance(reader, ChangeReader):
            raise SourceError(f"source {source.name!r}: {source.url!r} cannot capture changes")
        return ChangePoller(source, reader, self._ingest, self._metadata, self._now)

    def _folder(self, source: FolderSource) -> FolderPoller:
        return FolderPoller(source, self._root, self._ingest, self._metadata, self._now)
