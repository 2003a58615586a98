"""The offline store port: the columnar history of each stream, archived from the log."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import pyarrow as pa


class OfflineStore(Protocol):
    """Holds each stream's history as Arrow-readable files.

    Contract: ``append`` makes the rows of log offsets ``[start, end)`` of one log partition
    visible atomically together with that partition's new committed offset ``end``; rows of
    an interrupted append are never visible and are rewritten by the next one; ``files``
    lists exactly the committed files of every partition, as local paths or URLs;
    ``filesystem`` is the fsspec filesystem those URLs are read through (None for local
    paths), which a query engine registers to read them.
    """

    def committed(self, stream: str, partition: int = 0) -> int: ...

    def append(
        self, stream: str, table: pa.Table, start: int, end: int, partition: int = 0
    ) -> None: ...

    def files(self, stream: str, since: Mapping[int, int] | None = None) -> list[str]:
        """The committed files; with ``since`` (log partition -> offset), only those that
        may hold rows at or past its offsets (they may hold earlier rows too)."""
        ...

    def compact(self, stream: str) -> int:
        """Merge small files of the history into larger ones (what ``files`` lists keeps
        every row exactly once throughout); returns how many files were merged."""
        ...

    def filesystem(self) -> Any | None: ...

    def write_sorted(
        self, stream: str, name: str, table: pa.Table, about: Mapping[str, Any]
    ) -> None:
        """Replace the stream's sorted copy ``name`` (``features.sorted_history`` makes them,
        one per key tuple); ``about`` (JSON) says what it holds. Readers see the old copy or
        the new one, whole."""
        ...

    def sorted_about(self, stream: str, name: str) -> dict[str, Any] | None:
        """The ``about`` of a sorted copy, without reading the copy; None if none."""
        ...

    def read_sorted(self, stream: str, name: str) -> tuple[pa.Table, dict[str, Any]] | None:
        """A sorted copy as last written (memory-mapped where the store is a local folder)
        and its ``about``, or None if there is none."""
        ...
