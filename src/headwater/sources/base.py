"""The table-reader port of sources, the result of a poll, and the errors sources raise."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from headwater.errors import HeadwaterError

# Collections of the metadata store's records holding the sources' checkpoints.
TABLE_POSITIONS = "source_positions"  # table and change sources alike
FOLDER_FILES = "source_files"  # one collection per source: "source_files/<name>"


class SourceError(HeadwaterError):
    """A source cannot be read: its database, table, columns or files are not as declared."""


@dataclass(frozen=True)
class TableQuery:
    """What a poll reads: ``columns`` of ``table`` ordered by ``order_by`` (the cursor, then
    the key), only rows strictly after a position in that order, and — with ``delay_us`` —
    only rows whose cursor is at least that old by the database's clock."""

    table: str
    columns: tuple[str, ...]
    order_by: tuple[str, ...]
    delay_us: int | None = None


class TableReader(Protocol):
    """Reads a database's tables in keyset order.

    Contract: ``read`` returns at most ``limit`` rows (tuples of ``query.columns``) whose
    ``order_by`` values are strictly greater, compared as a tuple, than ``after`` (all rows
    when ``after`` is None), in ascending ``order_by`` order; rows with a NULL cursor are
    never returned. Values are the driver's Python values (datetime, Decimal, UUID, ...).
    """

    def columns(self, table: str) -> list[str]:
        """The table's column names; ``SourceError`` when there is no such table."""
        ...

    def read(
        self, query: TableQuery, after: Sequence[Any] | None, limit: int
    ) -> list[tuple[Any, ...]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Change:
    """One recorded change of a captured table: the transaction that made it and its order
    within the capture (together its position), what it did, when, and the row."""

    xid: str
    seq: int
    operation: str  # insert, update or delete
    changed_at: Any  # an aware datetime
    row: dict[str, Any]


@runtime_checkable
class ChangeReader(Protocol):
    """Reads a database table change by change (see ``ChangeSource``).

    Contract: ``install`` makes every later committed change of ``table`` recorded (once
    installed, calling it again changes nothing). ``snapshot`` yields the table's rows, in
    batches, as of one snapshot, first yielding that snapshot's token. ``changes`` returns up
    to ``limit`` recorded changes of ``table`` strictly after position ``after`` in (xid,
    seq) order, only of transactions that have ended (so no change can later appear before
    one returned), leaving out those of transactions visible in snapshot ``since`` (already
    in it). ``prune`` deletes recorded changes of ``table`` at or before ``upto`` that are
    older than ``older_than_s`` seconds.
    """

    def columns(self, table: str) -> list[str]: ...

    def install(self, table: str) -> None: ...

    def snapshot(self, table: str, batch: int) -> Generator[str | list[dict[str, Any]]]: ...

    def changes(
        self, table: str, after: tuple[str, int] | None, limit: int, since: str | None
    ) -> list[Change]: ...

    def prune(self, table: str, upto: tuple[str, int], older_than_s: float) -> int: ...

    def close(self) -> None: ...


@dataclass
class PollResult:
    """What one poll of one source did."""

    source: str
    read: int = 0  # rows (table) or events (files) read
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    files: int = 0  # files ingested
    waiting: int = 0  # files left until they are complete
    error: str | None = None  # the source could not be polled
    problems: list[str] = field(default_factory=list)  # files that could not be read

    def add(self, accepted: int, duplicates: int, rejected: int, read: int) -> None:
        self.accepted += accepted
        self.duplicates += duplicates
        self.rejected += rejected
        self.read += read

    def summary(self) -> str:
        if self.error:
            return f"{self.source}: error: {self.error}"
        files = f"{self.files} files, " if self.files or self.waiting else ""
        waiting = f", {self.waiting} files not yet complete" if self.waiting else ""
        problems = "".join(f"\n  unreadable: {p}" for p in self.problems)
        return (
            f"{self.source}: {files}{self.read} read, {self.accepted} accepted, "
            f"{self.duplicates} duplicates, {self.rejected} rejected{waiting}{problems}"
        )
