"""A stream's sorted history as one training set sees it: the copy and the rows archived since.

``last`` columns are the latest event before each spine time (one binary search per row and
run); ``count``, ``sum`` and ``mean`` columns are differences of prefix sums between the two
binary searches that bound each window, added over the runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.definitions import FeatureColumn, Stream
from headwater.definitions.expr import sql_name
from headwater.features.history import ARROW_TYPES
from headwater.features.sorted_history import (
    SortedRun,
    read_rows,
    read_run,
    snapshot_offsets,
    sort_rows,
)
from headwater.stores.offline_base import OfflineStore


class SortedView:
    """The latest events of a stream's keys: its sorted copy, and the rows archived since
    (sorted in memory), as one training set sees them."""

    def __init__(self, runs: list[SortedRun], key_type: pa.DataType) -> None:
        self.runs, self.key_type = runs, key_type

    @classmethod
    def open(
        cls,
        con: duckdb.DuckDBPyConnection,
        offline: OfflineStore,
        stream: Stream,
        snapshot: Mapping[str, int] | None,
    ) -> SortedView | None:
        """None where the stream has no usable copy, or the snapshot is older than it."""
        run = read_run(offline, stream)
        if run is None:
            return None
        until = None if snapshot is None else snapshot_offsets(snapshot, stream)
        if until is not None and any(until.get(p, 0) < end for p, end in run.covered.items()):
            return None  # the copy holds rows the snapshot must not see
        since = {p: end for p, end in run.covered.items() if end > 0}
        runs = [run]
        rows = read_rows(con, offline, stream, since, until)
        if rows.num_rows > len(run.pos):
            return None  # a copy too large to rebuild falls behind: the join does better
        if rows.num_rows:
            tail = sort_rows(rows, run.key, {})
            if tail is None:
                return None
            runs.append(tail)
        return cls(runs, ARROW_TYPES[stream.fields[run.key].dtype])

    def holds(self, column: FeatureColumn) -> bool:
        """Whether the runs hold every field the column reads."""
        where = column.feature.where
        fields = {column.aggregation.field or "", *(where.fields() if where else ())} - {""}
        return fields <= set(self.runs[0].table.column_names)

    def last(
        self,
        columns: Sequence[FeatureColumn],
        keys: pa.Array | pa.ChunkedArray,
        times: np.ndarray,
    ) -> dict[str, pa.Array]:
        """Each ``last`` column (of a never-null field, with no ``where``) at each (key, t):
        the field of the key's latest event before t, by (event time, log offset), null if
        there is none or it is older than the column's window start."""
        keys = keys.cast(self.key_type)
        copy = self.runs[0]
        first, order = copy.search(keys, times)
        found = [first] + [run.last_before(keys, times) for run in self.runs[1:]]
        best_run = np.where(first >= 0, 0, -1)
        best_time = copy.gather("_event_time", np.maximum(first, 0), order)
        if len(self.runs) > 1:
            best_offset = copy.gather("_offset", np.maximum(first, 0), order)
        for i, (run, rows) in enumerate(zip(self.runs, found, strict=True)):
            if i == 0:
                continue
            has, at = rows >= 0, np.maximum(rows, 0)
            time, offset = run.event_times[at], run.offsets[at]
            later = has & (
                (best_run < 0) | (time > best_time) | ((time == best_time) & (offset > best_offset))
            )
            best_time = np.where(later, time, best_time)
            best_offset = np.where(later, offset, best_offset)
            best_run = np.where(later, i, best_run)
        out: dict[str, pa.Array] = {}
        for column in columns:
            valid = best_run >= 0
            if column.window_us is not None and column.hop_us is not None:
                start = ((times - column.window_us) // column.hop_us) * column.hop_us
                valid &= best_time >= start
            field = column.aggregation.field or ""
            value = self.runs[0].gather(field, np.maximum(first, 0), order)
            for i, (run, rows) in enumerate(zip(self.runs, found, strict=True)):
                if i > 0:
                    value = _choose(best_run == i, run.gather(field, np.maximum(rows, 0)), value)
            out[column.name] = _with_nulls(value, valid)
        return out

    def totals(
        self,
        con: duckdb.DuckDBPyConnection,
        columns: Sequence[FeatureColumn],
        keys: pa.Array | pa.ChunkedArray,
        times: np.ndarray,
    ) -> dict[str, pa.Array]:
        """Each ``count``, ``sum`` or ``mean`` column (its ``where`` on fields the runs hold)
        at each (key, t): over the key's events in the column's window before t, the
        difference of two prefix sums in each run, added over the runs. Sums of floats are
        prefix sums in extended precision, so a difference keeps the window's own rounding
        (the join sums in double, in another order: the two agree to about 1e-15)."""
        keys = keys.cast(self.key_type)
        copy = self.runs[0]
        # every query is answered in the order of its search in the copy, then put back
        order = np.argsort(copy.ranks(keys) * copy.span + copy.slots(times))
        sorted_times = times[order]
        ranks = [run.ranks(keys)[order] for run in self.runs]
        ends: dict[tuple[int, object], np.ndarray] = {}
        prefixes: dict[tuple[int, str], tuple[np.ndarray, np.ndarray | None]] = {}
        sums_at: dict[tuple[int, str, object], tuple[np.ndarray, np.ndarray | None]] = {}

        def end(i: int, bound: object) -> np.ndarray:
            """Run i's ends at t ("t"), at the key's first row ("first"), or at the start of
            a (window, hop)."""
            if (i, bound) not in ends:
                at: np.ndarray | None = sorted_times
                if bound == "first":
                    at = None
                elif isinstance(bound, tuple):
                    window, hop = bound
                    at = ((sorted_times - window) // hop) * hop
                ends[(i, bound)] = self.runs[i].ends(ranks[i], at)
            return ends[(i, bound)]

        def prefix_at(
            i: int, column: FeatureColumn, bound: object
        ) -> tuple[np.ndarray, np.ndarray | None]:
            """Run i's prefix sums for the column at a bound (shared by the columns that
            count the same events: a 1h and a 30d window share the one at t)."""
            agg = column.aggregation
            spec = repr((agg.field if agg.kind != "count" else None, _where_spec(column)))
            if (i, spec) not in prefixes:
                prefixes[(i, spec)] = _prefix_sums(con, self.runs[i], column)
            if (i, spec, bound) not in sums_at:
                counts, sums = prefixes[(i, spec)]
                at = end(i, bound)
                sums_at[(i, spec, bound)] = (counts[at], None if sums is None else sums[at])
            return sums_at[(i, spec, bound)]

        out: dict[str, pa.Array] = {}
        for column in columns:
            start: object = "first"
            if column.window_us is not None and column.hop_us is not None:
                start = (column.window_us, column.hop_us)
            count = np.zeros(len(times), dtype=np.int64)
            total: np.ndarray | None = None
            for i in range(len(self.runs)):
                (count_lo, sum_lo), (count_hi, sum_hi) = (
                    prefix_at(i, column, start),
                    prefix_at(i, column, "t"),
                )
                count += count_hi - count_lo
                if sum_hi is not None and sum_lo is not None:
                    total = sum_hi - sum_lo if total is None else total + (sum_hi - sum_lo)
            out[column.name] = _finish(column, count, total, order)
        return out


def _where_spec(column: FeatureColumn) -> object:
    where = column.feature.where
    return None if where is None else where.spec()


def _prefix_sums(
    con: duckdb.DuckDBPyConnection, run: SortedRun, column: FeatureColumn
) -> tuple[np.ndarray, np.ndarray | None]:
    """Prefix sums over the run's rows (one more than rows, from 0) of the events a column
    counts, and, for ``sum`` and ``mean``, of their field's values (int64: a difference is
    exact even past a wrap; floats in ``np.longdouble``)."""
    agg = column.aggregation
    where = column.feature.where
    conditions = [] if where is None else [where.to_sql("e")]
    field = agg.field if agg.kind != "count" else None
    if field is not None:
        conditions.append(f"e.{sql_name(field)} IS NOT NULL")
    n = run.table.num_rows
    if conditions:
        con.register("_run", run.table)
        try:
            sql = f"SELECT coalesce({' AND '.join(conditions)}, false) FROM _run AS e"
            counted = con.sql(sql).to_arrow_table().column(0).to_numpy(zero_copy_only=False)
        finally:
            con.unregister("_run")
    else:
        counted = np.ones(n, dtype=bool)
    counts = np.zeros(n + 1, dtype=np.int64)
    counts[1:] = counted
    np.cumsum(counts, out=counts)
    if field is None:
        return counts, None
    values = run.table[field].fill_null(0).to_numpy()
    exact = values.dtype.kind == "i"
    sums = np.zeros(n + 1, dtype=np.int64 if exact else np.longdouble)
    sums[1:] = np.where(counted, values, 0)
    np.cumsum(sums, out=sums)
    return counts, sums


def _finish(
    column: FeatureColumn, count: np.ndarray, total: np.ndarray | None, order: np.ndarray
) -> pa.Array:
    """The column's values from its counts and sums (both in ``order``), in spine order and
    typed as the join types them."""
    kind = column.aggregation.kind
    if kind == "count":
        return pa.array(_put_back(count, order), pa.int64())
    assert total is not None
    if kind == "sum":
        if total.dtype == np.int64:
            return pa.array(_put_back(total, order), pa.int64())
        return pa.array(_put_back(total.astype(np.float64), order), pa.float64())
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (total / np.maximum(count, 1)).astype(np.float64)
    return _with_nulls(_put_back(mean, order), _put_back(count > 0, order))


def _put_back(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Values computed in ``order`` put back in spine order."""
    out = np.empty_like(values)
    out[order] = values
    return out


def _choose(
    where: np.ndarray, a: np.ndarray | pa.Array, b: np.ndarray | pa.Array
) -> np.ndarray | pa.Array:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.where(where, a, b)
    return pc.if_else(pa.array(where), a, b)


def _with_nulls(values: np.ndarray | pa.Array, valid: np.ndarray) -> pa.Array:
    """``values`` with nulls where ``valid`` is False. A NumPy array gets a validity bitmap
    packed from ``valid`` directly (``pa.array(values, mask=...)`` takes ~100 times longer)."""
    if isinstance(values, pa.Array):
        return pc.if_else(pa.array(valid), values, pa.scalar(None, values.type))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    kind = pa.int64() if values.dtype == np.int64 else pa.float64()
    return pa.Array.from_buffers(kind, len(values), [bitmap, pa.py_buffer(values)])
