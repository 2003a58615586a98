"""The offline store port: the columnar history of each stream, archived from the log."""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa


class OfflineStore(Protocol):
    """Holds each stream's history as Arrow-readable files.

    Contract: ``append`` makes the rows of log offsets ``[start, end)`` visible atomically
    together with the new committed offset ``end``; rows of an interrupted append are never
    visible and are rewritten by the next one; ``files`` lists exactly the committed files.
    """

    def committed(self, stream: str) -> int: ...

    def append(self, stream: str, table: pa.Table, start: int, end: int) -> None: ...

    def files(self, stream: str) -> list[str]: ...
