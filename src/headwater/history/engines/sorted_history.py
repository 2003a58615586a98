"""A stream's history sorted by its key and event time, for point-in-time lookups.

Beside the day-partitioned files, the archiver keeps one copy of each stream's history sorted
by (key, event time, log offset), uncompressed so that readers memory-map it. A key's events
in a window are then the rows between two binary searches in it (and in the rows archived
since it was written), which ``sorted_view`` turns into training-set values instead of a join
of the spine with the whole history. This module builds, stores and searches the copy.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.definitions import DType, Stream
from headwater.definitions.expr import sql_name
from headwater.history.engines.sql import connect, offsets_below
from headwater.history.schema import ARROW_TYPES
from headwater.stores.offline.base import OfflineStore

FORMAT = 1
# Rebuilt once the rows archived since it was written reach a quarter of its own: lookups
# then search at most 1.25 times the rows they would search in a fresh copy, and each row
# is sorted a bounded number of times as the history grows.
REBUILD_SHARE = 4
# A rebuild holds DuckDB's sorted result and one contiguous copy of it: 2.3 GB at its peak for
# a 1.0 GB copy of 10M rows. It is skipped where that would take more than half the memory.
BUILD_BYTES_PER_BYTE = 2.5
_TOO_LARGE: set[tuple[str, str]] = set()
_LOGGER = logging.getLogger("headwater.history.engines.sorted_history")
_LIMIT = 1 << 62  # keys x time slots must fit an int64 with room to spare
_ORDER = [(c, "ascending") for c in ("_event_time", "_offset", "_partition")]
_SQL_TYPES = {pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.string(): "VARCHAR",
              pa.bool_(): "BOOLEAN"}  # fmt: skip


def copied_fields(stream: Stream) -> list[str]:
    """The fields the copy holds: all but the time field, which is ``_event_time``."""
    return [name for name in stream.fields if name != stream.time]


def fingerprint(stream: Stream) -> list[list[str]]:
    """What a copy must have been made for to be used: its stream's copied fields and types."""
    return [[name, stream.fields[name].dtype.value] for name in copied_fields(stream)]


@dataclass(frozen=True)
class SortedRun:
    """History rows sorted by (key, ``_event_time``, ``_offset``, ``_partition``).

    ``pos`` orders them in one int64: the key's rank times ``span`` plus the event time's
    slot, either ``(time - origin) // unit`` (every time is ``origin`` plus a multiple of
    ``unit``), or, with ``unit == 0``, the time's rank among the distinct times, where the
    first form would not fit. ``covered`` holds, per log partition, the offset below which
    every row is in the run."""

    table: pa.Table
    keys_: tuple[str, ...]  # the key fields, in sort order
    origin: int
    unit: int
    span: int
    covered: dict[int, int]

    @cached_property
    def pos(self) -> np.ndarray:
        return self.table["_pos"].to_numpy()

    @cached_property
    def event_times(self) -> np.ndarray:
        return self.table["_event_time"].to_numpy()

    @cached_property
    def keys(self) -> pa.Table:
        """The distinct keys (tuples of the key fields) in rank order."""
        if not self.table.num_rows:
            return self.table.select(list(self.keys_)).slice(0, 0)
        ranks = int(self.pos[-1]) // self.span + 1
        first = np.searchsorted(self.pos, np.arange(ranks, dtype=np.int64) * self.span)
        return self.table.select(list(self.keys_)).take(first).combine_chunks()

    @cached_property
    def _codes(self) -> tuple[list[pa.Array], np.ndarray, pa.Array] | None:
        """For key tuples: each field's distinct values, the radix of each field's code, and
        each distinct tuple's code (the codes' mixed-radix number); None if codes would not
        fit an int64 (then no tuple is found)."""
        values = [pc.unique(self.keys[k]) for k in self.keys_]
        sizes = [len(v) + 1 for v in values]
        if float(np.prod([float(n) for n in sizes])) >= _LIMIT:
            return None
        radix = np.cumprod([1, *sizes[:0:-1]])[::-1].astype(np.int64)
        codes = _code(self.keys, self.keys_, values, radix)
        return values, radix, pa.array(codes)

    @cached_property
    def _times(self) -> np.ndarray:
        """The distinct event times, ascending (the slots of the rank form)."""
        times = np.zeros(self.span, dtype=np.int64)
        times[self.pos % self.span] = self.event_times
        return times

    def slots(self, times: np.ndarray) -> np.ndarray:
        """Per time t, the slot s such that an event's slot is below s iff it is before t."""
        if self.unit == 0:
            return np.searchsorted(self._times, times, "left")
        # (time - origin) // unit < ceil((t - origin) / unit)  <=>  time < t
        slots = -((self.origin - times) // self.unit)
        return np.clip(slots, 0, self.span)

    def ranks(self, keys: pa.Table) -> np.ndarray:
        """Each key's rank in the run (``keys``: the key fields' columns), -1 for a key it
        does not hold."""
        if len(self.keys_) == 1:
            ranks = pc.index_in(keys[self.keys_[0]], value_set=self.keys[self.keys_[0]])
        elif self._codes is None:
            return np.full(keys.num_rows, -1, dtype=np.int64)
        else:
            values, radix, codes = self._codes
            wanted = _code(keys, self.keys_, values, radix)
            ranks = pc.index_in(pa.array(wanted), value_set=codes)
        return ranks.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

    def ends(self, rank: np.ndarray, times: np.ndarray | None) -> np.ndarray:
        """Per (key rank, t), the row after the key's last event before t (``times`` None:
        the key's first row), so its events in ``[start, t)`` are the rows from ``ends`` at
        ``start`` up to ``ends`` at t. A rank of -1 gives 0. Searched in the queries' order
        (best near-ascending)."""
        if not self.table.num_rows:
            return np.zeros(len(rank), dtype=np.int64)
        slots = 0 if times is None else self.slots(times)
        return np.searchsorted(self.pos, rank * self.span + slots, "left")

    def gather(self, field: str, rows: np.ndarray) -> np.ndarray | pa.Array:
        """The field's values at ``rows`` (none -1), as a NumPy array where the field is an
        int or a float with no nulls, else as an Arrow array."""
        column = self.table[field]
        if column.type not in (pa.int64(), pa.float64()) or column.null_count:
            return column.take(pa.array(rows)).combine_chunks()
        return column.to_numpy()[rows]

    def about(self, stream: Stream) -> dict[str, Any]:
        """What reading the run back needs, and what deciding to rebuild it needs."""
        return {
            "format": FORMAT,
            "fields": fingerprint(stream),
            "keys": list(self.keys_),
            "origin": self.origin,
            "unit": self.unit,
            "span": self.span,
            "rows": self.table.num_rows,
            "covered": {str(p): end for p, end in self.covered.items()},
        }


def sort_rows(
    table: pa.Table, keys: Sequence[str], covered: Mapping[int, int], presorted: bool = False
) -> SortedRun | None:
    """Sort history rows (the keys, ``_event_time``, ``_offset``, ``_partition`` and fields)
    into a run (``presorted``: they come in that order); None if keys times time slots would
    not fit an int64."""
    if any(table[k].null_count for k in keys):
        # an event without one of the keys belongs to no entity of them (the join never
        # matches a null): entities keyed by a field the stream may leave empty
        keyed = pc.is_valid(table[keys[0]])
        for k in keys[1:]:
            keyed = pc.and_(keyed, pc.is_valid(table[k]))
        table = table.filter(keyed)
    if not presorted:
        table = table.take(pc.sort_indices(table, [(k, "ascending") for k in keys] + _ORDER))
    rows = table.combine_chunks()  # one chunk per column: readers search them in place
    n = rows.num_rows
    times = rows["_event_time"].to_numpy()
    origin, unit, span = (int(times[0]), 1, 1) if n else (0, 1, 1)
    rank = np.zeros(n, dtype=np.int64)
    if n:
        changed = np.zeros(n - 1, dtype=bool)
        for key in keys:
            column = rows[key].chunk(0)
            changed |= pc.not_equal(column[1:], column[:-1]).to_numpy(zero_copy_only=False)
        rank[1:] = changed  # a cumulative sum of int64s: twice as fast as of booleans
        np.cumsum(rank, out=rank)
        origin = int(times.min())
        delta = times - origin
        unit = int(np.gcd.reduce(delta)) or 1
        span = int(delta.max()) // unit + 1
        n_keys = int(rank[-1]) + 1
        if n_keys * span < _LIMIT:
            slot = delta // unit
        else:  # spread-out microseconds: slots are the ranks of the distinct times
            distinct = np.unique(times)
            unit, span = 0, len(distinct)
            if n_keys * span >= _LIMIT:
                return None
            slot = np.searchsorted(distinct, times)
        rank = rank * span + slot
    table = rows.append_column("_pos", pa.array(rank, pa.int64()))
    return SortedRun(table, tuple(keys), origin, unit, span, dict(covered))


def copy_name(keys: Sequence[str]) -> str:
    """The name of the copy sorted by ``keys`` ("+" cannot be in a field's name).

    >>> copy_name(["user_id"]), copy_name(["user_id", "item_id"])
    ('user_id', 'user_id+item_id')
    """
    return "+".join(keys)


def _usable(about: Mapping[str, Any] | None, stream: Stream, keys: Sequence[str]) -> bool:
    """Whether a copy described by ``about`` was made by this code for the stream's fields
    (after they change, the next archive run rebuilds it)."""
    return (
        about is not None
        and about.get("format") == FORMAT
        and about.get("keys") == list(keys)
        and about.get("fields") == fingerprint(stream)
    )


def _covered(about: Mapping[str, Any]) -> dict[int, int]:
    return {int(p): int(end) for p, end in about["covered"].items()}


def read_run(
    offline: OfflineStore, stream: Stream, keys: Sequence[str] | None = None
) -> SortedRun | None:
    """The stream's copy sorted by ``keys`` (by default its own), or None if it has none it
    can use."""
    keys = tuple(stream.keys if keys is None else keys)
    got = offline.read_sorted(stream.name, copy_name(keys))
    if got is None or not _usable(got[1], stream, keys):
        return None
    table, about = got
    return SortedRun(
        table,
        keys,
        int(about["origin"]),
        int(about["unit"]),
        int(about["span"]),
        _covered(about),
    )


def read_rows(
    con: duckdb.DuckDBPyConnection,
    offline: OfflineStore,
    stream: Stream,
    since: Mapping[int, int],
    until: Mapping[int, int] | None,
    order_by: Sequence[str] | None = None,
) -> pa.Table:
    """The history rows of offsets at or past ``since`` and below ``until`` (per log
    partition; an absent partition's ``since`` is 0, its ``until`` 0 too, so none of its
    rows), with the columns a run holds; ``order_by`` key fields: in the order of a run
    sorted by them (DuckDB sorts on every core: 10M rows in 2.9 s here, where reading them
    and sorting in Arrow took 9.5)."""
    files = offline.files(stream.name, since=since)
    schema = pa.schema(
        [pa.field(c, pa.int64()) for c in ("_event_time", "_offset")]
        + [pa.field("_partition", pa.int32())]
        + [pa.field(f, ARROW_TYPES[stream.fields[f].dtype]) for f in copied_fields(stream)]
    )
    if not files:
        return schema.empty_table()
    source = "read_parquet($files, union_by_name = true)"
    present = {
        row[0]
        for row in con.sql(f"DESCRIBE SELECT * FROM {source}", params={"files": files}).fetchall()
    }
    columns = ", ".join(
        f"CAST({sql_name(f.name) if f.name in present else 'NULL'} AS {_SQL_TYPES[f.type]}) "
        f"AS {sql_name(f.name)}"
        for f in schema
        if f.name != "_partition"
    )
    conditions = [f"NOT ({offsets_below(since)})"]
    if until is not None:
        conditions.append(offsets_below(until))
    sql = f"""SELECT {columns}, CAST(coalesce(_partition, 0) AS INTEGER) AS _partition
FROM {source}
WHERE {" AND ".join(conditions)}"""
    if order_by is not None:
        keys = ", ".join(sql_name(k) for k in order_by)
        sql += f"\nORDER BY {keys}, _event_time, _offset, _partition"
    rows = con.sql(sql, params={"files": files}).to_arrow_table()
    return rows.select(schema.names).cast(schema)


def refresh(
    offline: OfflineStore,
    stream: Stream,
    committed: Mapping[int, int],
    keys: Sequence[str] | None = None,
    force: bool = False,
) -> bool:
    """Rewrite the stream's copy sorted by ``keys`` (by default its own) from its whole
    history if the rows archived since it was written reach ``1 / REBUILD_SHARE`` of its
    rows (or ``force``); returns whether it did.

    ``committed`` holds each log partition's archived end offset, read before the files are
    listed, so the copy covers exactly the rows below them."""
    keys = tuple(stream.keys if keys is None else keys)
    name = copy_name(keys)
    about = offline.sorted_about(stream.name, name)  # the pointer only: the copy may be large
    usable = _usable(about, stream, keys)
    covered = _covered(about) if about is not None and usable else {}
    rows = int(about["rows"]) if about is not None and usable else 0
    behind = sum(max(end - covered.get(p, 0), 0) for p, end in committed.items())
    if not force and (behind == 0 or (usable and behind * REBUILD_SHARE < rows)):
        return False
    needed = BUILD_BYTES_PER_BYTE * (rows + behind) * row_bytes(stream)
    if needed > memory_bytes() // 2:
        if (stream.name, name) not in _TOO_LARGE:  # once per process: archiving is frequent
            _TOO_LARGE.add((stream.name, name))
            _LOGGER.warning(
                "stream %r: not sorting its history (%s rows would need ~%.1f GB, more than "
                "half of this machine's memory); last features use the join",
                stream.name, f"{rows + behind:,}", needed / 1e9,
            )  # fmt: skip
        return False
    began = time.perf_counter()
    with connect(offline) as con:
        table = read_rows(con, offline, stream, {}, committed, order_by=keys)
    fresh = sort_rows(table, keys, committed, presorted=True)
    if fresh is None:
        return False
    offline.write_sorted(stream.name, name, fresh.table, fresh.about(stream))
    _LOGGER.info(
        "stream %r: sorted %s rows of history by %s in %.1f s",
        stream.name, f"{fresh.table.num_rows:,}", name, time.perf_counter() - began,
    )  # fmt: skip
    return True


def _code(
    keys: pa.Table, names: Sequence[str], values: list[pa.Array], radix: np.ndarray
) -> np.ndarray:
    """Each key tuple's mixed-radix code: field by field, the value's place among the
    distinct values plus one (0 for a value not among them, so no tuple of the run has it)."""
    code = np.zeros(keys.num_rows, dtype=np.int64)
    for name, distinct, weight in zip(names, values, radix, strict=True):
        place = pc.index_in(keys[name], value_set=distinct)
        digits = place.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
        code += digits * weight
    return code


def row_bytes(stream: Stream) -> int:
    """About how many bytes a row of the copy takes (strings counted at 24)."""
    fixed = 8 * 4 + 4  # _pos, _event_time, _offset, the key or its string's offset; _partition
    fields = [stream.fields[f].dtype for f in copied_fields(stream)]
    return fixed + sum(24 if t is DType.STRING else 8 for t in fields)


def memory_bytes() -> int:
    """This machine's physical memory (a very large number where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 62
