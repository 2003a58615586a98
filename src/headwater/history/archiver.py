"""Archiving the log into the offline store, incrementally and checkpointed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from headwater.definitions import Stream
from headwater.history.engines import sorted_history as sorted_copies
from headwater.history.schema import records_to_table
from headwater.log.base import Log
from headwater.stores.offline.base import OfflineStore

_LOGGER = logging.getLogger("headwater.history.archiver")


class Archiver:
    """Copies each stream's new log records into the offline store, partition by partition.

    The store commits the files of a batch together with its end offset, so a crash at any
    point leaves either the old or the new history, and the next run resumes from the marker.
    With ``sorted_history``, each run then keeps the stream's sorted copies current enough
    (``features.sorted_history.refresh``): one per key tuple in ``sorted_by`` (stream name ->
    the key tuples its features' entities have), or, without it, one by the stream's keys.
    """

    def __init__(
        self,
        log: Log,
        offline: OfflineStore,
        batch_size: int = 250_000,
        sorted_history: bool = True,
        sorted_by: Mapping[str, Sequence[tuple[str, ...]]] | None = None,
    ) -> None:
        self._log, self._offline, self._batch = log, offline, batch_size
        self._sorted_history, self._sorted_by = sorted_history, sorted_by
        # set in a process that reads a history another one keeps current (the training
        # workers of `train --all --jobs N`): two processes must not archive one stream
        self.read_only = False

    def sorted_keys(self, stream: Stream) -> list[tuple[str, ...]]:
        """The key tuples the stream's history is kept sorted by (none with the copies off)."""
        if not self._sorted_history:
            return []
        if self._sorted_by is None:
            return [tuple(stream.keys)]
        return [tuple(keys) for keys in self._sorted_by.get(stream.name, [])]

    def catch_up(self, stream: Stream, progress: Callable[[int], None] | None = None) -> int:
        """Archive everything the log holds for the stream now; returns the records added.

        Each partition is read until a read finds nothing: the log's end offset is not
        trusted (a Kafka broker's high watermark may lag), nor are offsets dense."""
        if self.read_only:
            return 0
        added = 0
        committed: dict[int, int] = {}
        for partition in range(self._log.partitions(stream.name)):
            start = committed[partition] = self._offline.committed(stream.name, partition)
            while records := self._log.read(stream.name, start, self._batch, partition):
                end = records[-1].offset + 1
                table = records_to_table(stream, records)
                self._offline.append(stream.name, table, start, end, partition)
                added += len(records)
                start = committed[partition] = end
                if progress is not None:
                    progress(len(records))
        if added:  # a backfill out of time order leaves many small files a day
            self._offline.compact(stream.name)
        if self._sorted_history:
            try:
                for keys in self.sorted_keys(stream):
                    sorted_copies.refresh(self._offline, stream, committed, keys)
            except Exception:  # noqa: BLE001
                # the copy only makes training sets faster: whatever goes wrong with it (a
                # full disk, or a bug), archiving, which everything else waits on, goes on
                _LOGGER.exception(
                    "stream %r: sorting its history failed; training sets use the join",
                    stream.name,
                )
        return added
