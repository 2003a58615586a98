"""The monitor state port: the tables of the monitor's ledger, behind one SQL session.

The ledger (``monitoring/ledger.py``) keeps predictions, their ground truth and daily
aggregates in the tables ``schema.py`` creates; it speaks a portable subset of SQL that both
backends run as written: ``?`` parameters; ``INSERT ... ON CONFLICT``; ``UPDATE ... FROM``;
``DELETE ... USING``; ``EXISTS`` rather than semi joins; window functions rather than
``arg_max``; ``percentile_cont(0.5) WITHIN GROUP (ORDER BY x)`` for medians; ``float8``
for doubles; aggregates with ``FILTER`` and ``ORDER BY``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import pyarrow as pa

from headwater.errors import HeadwaterError


class MonitorStateError(HeadwaterError):
    """The monitor's state could not be opened (busy, unreachable, or newer than known)."""


class MonitorSession(Protocol):
    """The ledger's tables, held by one session at a time across every process sharing them.

    Contract: statements run in autocommit unless inside ``transaction``, whose changes all
    land or none do (a process killed inside one leaves the state of its last commit);
    ``load`` makes an Arrow table readable by the session's SQL under ``name`` until
    ``load`` replaces it or the session ends; ``reset`` drops every table and creates the
    schema anew (the ledger is derived from the log, so starting over loses nothing).
    """

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table: ...

    def load(self, name: str, table: pa.Table) -> None: ...

    def transaction(self) -> AbstractContextManager[None]: ...

    def reset(self) -> None: ...


class MonitorStore(Protocol):
    """Where the ledger lives: ``session`` waits up to ``wait`` seconds for another holder
    (a thread or a process, here or on another host) to finish, then raises
    ``MonitorStateError``; the schema is created or migrated when a session opens."""

    location: str  # what errors name (a path, or a URL without its password)

    def session(self, wait: float = 120.0) -> AbstractContextManager[MonitorSession]: ...


def column_types(table: pa.Table) -> Iterator[tuple[str, str]]:
    """The SQL type of each column of an Arrow table ``load`` is given."""
    for field in table.schema:
        t = field.type
        if pa.types.is_boolean(t):
            yield field.name, "BOOLEAN"
        elif pa.types.is_int32(t) or pa.types.is_int16(t) or pa.types.is_int8(t):
            yield field.name, "INTEGER"
        elif pa.types.is_integer(t):
            yield field.name, "BIGINT"
        elif pa.types.is_floating(t):
            yield field.name, "float8"
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
            yield field.name, "VARCHAR"
        else:
            raise MonitorStateError(f"the monitor state cannot load a column of type {t}")
