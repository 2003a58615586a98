"""A stream's sorted history as one training set sees it: the copy and the rows archived since.

Every query is bounded by binary searches in each run: its key's rows before t end at one row,
and its window's start is another. ``last`` and ``first`` are the row before the end and the
row at the start (or the nearest row an event filter keeps); ``min`` and ``max`` a reduction
over the rows between; ``count``, ``sum`` and ``mean`` differences of prefix sums. Runs are then
combined: the later (earlier) event wins, extremes compare, sums add up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.definitions import FeatureColumn, Stream
from headwater.definitions.expr import sql_name
from headwater.features.batch import snapshot_condition
from headwater.features.history import ARROW_TYPES
from headwater.features.sorted_history import (
    SortedRun,
    named_offsets,
    read_rows,
    read_run,
    snapshot_offsets,
    sort_rows,
)
from headwater.stores.offline_base import OfflineStore


class SortedView:
    """A stream's sorted copy and the rows archived since it was written (sorted in memory),
    as one training set sees them: ``runs``, the copy first."""

    def __init__(
        self, runs: list[SortedRun], key_types: pa.Schema, hidden: list[str | None] | None = None
    ) -> None:
        """``key_types``: the key fields' types; ``hidden``: per run, SQL over its rows (alias
        ``e``) that keeps only those a snapshot may see, or None where it may see them all."""
        self.runs, self.key_types = runs, key_types
        self.hidden = hidden or [None] * len(runs)

    @classmethod
    def open(
        cls,
        con: duckdb.DuckDBPyConnection,
        offline: OfflineStore,
        stream: Stream,
        snapshot: Mapping[str, int] | None,
    ) -> SortedView | None:
        """None where the stream has no usable copy. A snapshot older than the copy hides
        the copy's rows at or past its offsets (every value is then computed as if they were
        not there: a training set pinned to a snapshot gets the same values whichever copy
        it finds)."""
        run = read_run(offline, stream)
        if run is None:
            return None
        until = None if snapshot is None else snapshot_offsets(snapshot, stream)
        hidden: list[str | None] = [None]
        if until is not None and any(until.get(p, 0) < end for p, end in run.covered.items()):
            hidden = [f"({snapshot_condition(named_offsets(stream, until), stream.name)})"]
        since = {p: end for p, end in run.covered.items() if end > 0}
        runs = [run]
        rows = read_rows(con, offline, stream, since, until)
        if rows.num_rows > len(run.pos):
            return None  # a copy too large to rebuild falls behind: the join does better
        if rows.num_rows:
            tail = sort_rows(rows, run.keys_, {})
            if tail is None:
                return None
            runs.append(tail)
            hidden.append(None)  # read up to the snapshot already
        types = pa.schema([(k, ARROW_TYPES[stream.fields[k].dtype]) for k in stream.keys])
        return cls(runs, types, hidden)

    def holds(self, column: FeatureColumn) -> bool:
        """Whether the runs hold every field the column reads."""
        where = column.feature.where
        fields = {column.aggregation.field or "", *(where.fields() if where else ())} - {""}
        return fields <= set(self.runs[0].table.column_names)

    def values(
        self,
        con: duckdb.DuckDBPyConnection,
        columns: Sequence[FeatureColumn],
        keys: pa.Table,
        times: np.ndarray,
    ) -> dict[str, pa.Array]:
        """Each column (``last``, ``first``, ``min``, ``max``, ``count``, ``sum`` or ``mean``)
        at each (key, t), over the key's events in the column's window before t that its
        ``where`` keeps; a ``min`` or ``max`` it leaves out (see ``_extreme``) is the join's.

        ``last`` (``first``): the field of the latest (earliest) such event whose field is
        not null, by (event time, log offset); null where there is none. ``count``, ``sum``,
        ``mean``: the difference of two prefix sums in each run, added over the runs. Counts
        and sums of ints are exact; sums of floats are prefix sums in extended precision
        (64-bit mantissas), whose rounding grows with the sum of every row before: the join,
        which adds in double in another order, agrees to within 1e-9 relative (the
        benchmarks check it), not to the bit, which is why training sets pinned to a snapshot
        take those from the join."""
        q = _Queries(self, con, keys, times)
        out: dict[str, pa.Array] = {}
        for column in columns:
            kind = column.aggregation.kind
            if kind in ("last", "first"):
                out[column.name] = self._pick(q, column)
            elif kind == "last_k":
                out[column.name] = self._last_k(q, column)
            elif kind in ("min", "max"):
                extreme = self._extreme(q, column)
                if extreme is not None:  # else too many rows to scan: the join's
                    out[column.name] = extreme
            else:
                out[column.name] = self._total(q, column)
        return out

    def _extreme(self, q: _Queries, column: FeatureColumn) -> pa.Array | None:
        """min (max) of the kept values in each window: a reduction over the rows between
        the window's bounds in each run, then over the runs (exact, in any order). None where
        the field is not an int or float, holds NaN, or the windows would add up to more than
        ``SCAN_BUDGET`` times the rows and queries (long lifetimes of busy keys)."""
        found = np.zeros(len(q.times), dtype=bool)
        best: np.ndarray | None = None
        for i in range(len(self.runs)):
            got = q.extreme(i, column)
            if got is None:
                return None
            value, kept = got
            if best is None:
                best = value
            else:
                both = np.minimum if column.aggregation.kind == "min" else np.maximum
                best = np.where(found & kept, both(best, value), np.where(kept, value, best))
            found |= kept
        assert best is not None
        return _with_nulls(q.put_back(best), q.put_back(found))

    def _pick(self, q: _Queries, column: FeatureColumn) -> pa.Array:
        best_run, rows = q.pick(column)
        field = column.aggregation.field or ""
        value = self.runs[0].gather(field, rows[0])
        for i in range(1, len(self.runs)):
            value = _choose(best_run == i, self.runs[i].gather(field, rows[i]), value)
        return _with_nulls(q.put_back(value), q.found(best_run))

    def _last_k(self, q: _Queries, column: FeatureColumn) -> pa.Array:
        """The field's values of the k latest kept events in the window, latest first (an
        empty list where there are none): k steps back from the end in each run, then, with
        several runs, the k latest of their candidates by (event time, log offset)."""
        k = column.aggregation.k or 1
        field = column.aggregation.field or ""
        n = len(q.times)
        found, times, offsets, runs, rows = [], [], [], [], []
        for i, run in enumerate(self.runs):
            lo, hi = q.end(i, q.start(column)), q.end(i, "t")
            kept = q.kept(i, column)
            row = hi
            for _ in range(k):
                row = row - 1 if kept is None else kept.before[np.maximum(row, 0)]
                row = np.where(row >= lo, row, -1)  # once past lo, -1 stays -1
                at = np.maximum(row, 0)
                found.append(row >= 0)
                times.append(run.gather("_event_time", at))
                offsets.append(run.gather("_offset", at))
                runs.append(np.full(n, i))
                rows.append(at)
        has = np.stack(found, axis=1)  # (queries, candidates), each run's latest first
        pick = np.arange(has.shape[1])[None, :].repeat(n, axis=0)
        if len(self.runs) > 1:  # order each query's candidates: found, then latest first
            latest = np.iinfo(np.int64).max
            time = np.where(has, -np.stack(times, axis=1), latest)
            offset = np.where(has, -np.stack(offsets, axis=1), latest)
            pick = np.lexsort((offset, time), axis=1)
        pick = pick[:, :k]
        chosen = np.take_along_axis(has, pick, axis=1)
        counts = chosen.sum(axis=1)
        run_of = np.take_along_axis(np.stack(runs, axis=1), pick, axis=1)[chosen]
        row_of = np.take_along_axis(np.stack(rows, axis=1), pick, axis=1)[chosen]
        value = self.runs[0].gather(field, np.where(run_of == 0, row_of, 0))
        for i in range(1, len(self.runs)):  # each run read at its own rows only
            theirs = self.runs[i].gather(field, np.where(run_of == i, row_of, 0))
            value = _choose(run_of == i, theirs, value)
        ends = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(counts, out=ends[1:])
        items = value if isinstance(value, pa.Array) else pa.array(value)
        return q.put_back(pa.ListArray.from_arrays(pa.array(ends), items))

    def _total(self, q: _Queries, column: FeatureColumn) -> pa.Array:
        count = np.zeros(len(q.times), dtype=np.int64)
        total: np.ndarray | None = None
        for i in range(len(self.runs)):
            count_lo, sum_lo = q.prefix_at(i, column, q.start(column))
            count_hi, sum_hi = q.prefix_at(i, column, "t")
            count += count_hi - count_lo
            if sum_hi is not None and sum_lo is not None:
                total = sum_hi - sum_lo if total is None else total + (sum_hi - sum_lo)
        return _finish(column, count, total, q)


# min/max scan the rows of every window: beyond this many times the rows and queries (busy
# keys' lifetimes), the join does it
SCAN_BUDGET = 16
_Pick = tuple[np.ndarray, list[np.ndarray]]  # the run of each query's event, each run's rows


class _Kept:
    """The rows an event filter keeps, as the nearest kept row before and after each row."""

    def __init__(self, kept: np.ndarray) -> None:
        n = len(kept)
        rows = np.arange(n, dtype=np.int64)
        # before[k]: the last kept row below k (-1: none); after[k]: the first from k (n: none)
        self.before = np.empty(n + 1, dtype=np.int64)
        self.before[0] = -1
        np.maximum.accumulate(np.where(kept, rows, -1), out=self.before[1:])
        self.after = np.empty(n + 1, dtype=np.int64)
        self.after[n] = n
        self.after[:n] = np.minimum.accumulate(np.where(kept, rows, n)[::-1])[::-1]


class _Queries:
    """One spine's queries against a view, in the order of their search in the copy (so that
    consecutive searches and reads walk nearby memory), with what columns share: the bounds
    of each window, the events each filter keeps, their prefix sums."""

    def __init__(
        self,
        view: SortedView,
        con: duckdb.DuckDBPyConnection,
        keys: pa.Table,
        times: np.ndarray,
    ) -> None:
        keys = keys.select(view.key_types.names).cast(view.key_types)
        copy = view.runs[0]
        self.runs, self.hidden, self.con = view.runs, view.hidden, con
        ranks = [run.ranks(keys) for run in view.runs]
        self.order = np.argsort(ranks[0] * copy.span + copy.slots(times))
        self.times = times[self.order]
        self.ranks = [rank[self.order] for rank in ranks]
        self._ends: dict[tuple[int, object], np.ndarray] = {}
        self._counted: dict[tuple[int, str], np.ndarray | None] = {}
        self._kept: dict[tuple[int, str], _Kept | None] = {}
        self._prefixes: dict[tuple[int, str], tuple[np.ndarray, np.ndarray | None]] = {}
        self._prefix_at: dict[tuple[int, str, object], tuple[np.ndarray, np.ndarray | None]] = {}
        self._found: dict[int, np.ndarray] = {}  # by the id of a pick's (cached) best_run
        self._picks: dict[
            tuple[bool, object, tuple[int, ...]], tuple[np.ndarray, list[np.ndarray]]
        ] = {}

    @staticmethod
    def start(column: FeatureColumn) -> object:
        """The bound a column's window starts at: its (window, hop), or the key's first row."""
        if column.window_us is not None and column.hop_us is not None:
            return (column.window_us, column.hop_us)
        return "first"

    def end(self, i: int, bound: object) -> np.ndarray:
        """Run i's ends at t ("t"), at the key's first row ("first"), or at the start of a
        (window, hop)."""
        if (i, bound) not in self._ends:
            at: np.ndarray | None = self.times
            if bound == "first":
                at = None
            elif isinstance(bound, tuple):
                window, hop = bound
                at = ((self.times - window) // hop) * hop
            self._ends[(i, bound)] = self.runs[i].ends(self.ranks[i], at)
        return self._ends[(i, bound)]

    def counted(self, i: int, field: str | None, column: FeatureColumn) -> np.ndarray | None:
        """Which of run i's rows the column's ``where`` keeps and have ``field`` not null;
        None where that is every row."""
        where = column.feature.where
        spec = repr((field, None if where is None else where.spec()))
        if (i, spec) not in self._counted:
            conditions = [] if where is None else [where.to_sql("e")]
            run, hidden = self.runs[i], self.hidden[i]
            if hidden is not None:
                conditions.append(hidden)
            if field is not None and run.table[field].null_count:
                conditions.append(f"e.{sql_name(field)} IS NOT NULL")
            self._counted[(i, spec)] = _evaluate(self.con, run, conditions)
        return self._counted[(i, spec)]

    def kept(self, i: int, column: FeatureColumn) -> _Kept | None:
        field = column.aggregation.field
        key = (i, repr((field, _where_spec(column))))
        if key not in self._kept:
            counted = self.counted(i, field, column)
            self._kept[key] = None if counted is None else _Kept(counted)
        return self._kept[key]

    def prefix_at(
        self, i: int, column: FeatureColumn, bound: object
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Run i's prefix sums for the column at a bound (shared by the columns that count
        the same events: a 1h and a 30d window share the one at t)."""
        agg = column.aggregation
        field = agg.field if agg.kind != "count" else None
        spec = repr((field, _where_spec(column)))
        if (i, spec) not in self._prefixes:
            counted = self.counted(i, field, column)
            self._prefixes[(i, spec)] = _prefix_sums(self.runs[i], field, counted)
        if (i, spec, bound) not in self._prefix_at:
            counts, sums = self._prefixes[(i, spec)]
            at = self.end(i, bound)
            self._prefix_at[(i, spec, bound)] = (counts[at], None if sums is None else sums[at])
        return self._prefix_at[(i, spec, bound)]

    def pick(self, column: FeatureColumn) -> _Pick:
        """For a ``last`` (``first``) column, which run holds each query's latest (earliest)
        kept event in the window (-1: none), and each run's row of it (shared by the columns
        with the same window and filter)."""
        latest = column.aggregation.kind == "last"
        bound = self.start(column)
        kepts = [self.kept(i, column) for i in range(len(self.runs))]
        key = (latest, bound, tuple(id(kept) for kept in kepts))  # kept ones are cached
        if key in self._picks:
            return self._picks[key]
        n = len(self.times)
        best_run = np.full(n, -1, dtype=np.int64)
        best_time = np.zeros(n, dtype=np.int64)
        best_offset = np.zeros(n, dtype=np.int64)
        rows = []
        for i, run in enumerate(self.runs):
            lo, hi = self.end(i, bound), self.end(i, "t")
            kept = kepts[i]
            if latest:  # the last kept row before hi, if it is not before lo
                row = hi - 1 if kept is None else kept.before[hi]
                found = row >= lo
            else:  # the first kept row from lo, if it is before hi
                row = lo if kept is None else kept.after[lo]
                found = row < hi
            row = np.where(found, row, 0)
            rows.append(row)
            if len(self.runs) == 1:
                best_run = np.where(found, 0, -1)
                break
            time, offset = run.gather("_event_time", row), run.gather("_offset", row)
            if latest:
                better = (time > best_time) | ((time == best_time) & (offset > best_offset))
            else:
                better = (time < best_time) | ((time == best_time) & (offset < best_offset))
            better = found & ((best_run < 0) | better)
            best_run = np.where(better, i, best_run)
            best_time = np.where(better, time, best_time)
            best_offset = np.where(better, offset, best_offset)
        self._picks[key] = (best_run, rows)
        return best_run, rows

    def found(self, best_run: np.ndarray) -> np.ndarray:
        """Which queries a pick found an event for, in spine order (shared like the pick)."""
        if id(best_run) not in self._found:
            self._found[id(best_run)] = self.put_back(best_run >= 0)
        return self._found[id(best_run)]

    def extreme(self, i: int, column: FeatureColumn) -> tuple[np.ndarray, np.ndarray] | None:
        """Run i's min (max) of the column's kept values in each query's window, and whether
        the window kept any; None where ``SortedView._extreme`` says so."""
        field = column.aggregation.field or ""
        run = self.runs[i]
        data = run.table[field]
        if data.type not in (pa.int64(), pa.float64()):
            return None
        lo, hi = self.end(i, self.start(column)), self.end(i, "t")
        if int((hi - lo).sum()) > SCAN_BUDGET * (len(run.pos) + len(lo)):
            return None
        values = data.fill_null(0).to_numpy()
        if values.dtype.kind == "f" and np.isnan(values).any():
            return None  # NaN orders differently in SQL and in NumPy
        smallest = column.aggregation.kind == "min"
        if values.dtype.kind == "f":
            sentinel = np.inf if smallest else -np.inf
        else:
            sentinel = np.iinfo(np.int64).max if smallest else np.iinfo(np.int64).min
        counted = self.counted(i, field, column)
        padded = np.full(len(values) + 1, sentinel, dtype=values.dtype)
        padded[:-1] = values if counted is None else np.where(counted, values, sentinel)
        bounds = np.empty(2 * len(lo), dtype=np.int64)
        bounds[0::2], bounds[1::2] = lo, hi
        reduce = np.minimum.reduceat if smallest else np.maximum.reduceat
        value = reduce(padded, bounds)[0::2]  # [lo, hi) reduced; lo == hi gives padded[lo]
        counts = np.zeros(len(values) + 1, dtype=np.int64)
        counts[1:] = True if counted is None else counted
        np.cumsum(counts, out=counts)
        return value, counts[hi] > counts[lo]

    def put_back(self, values: np.ndarray | pa.Array) -> np.ndarray | pa.Array:
        """Values computed in query order put back in spine order."""
        if isinstance(values, pa.Array):
            inverse = np.empty(len(self.order), dtype=np.int64)
            inverse[self.order] = np.arange(len(self.order))
            return values.take(pa.array(inverse))
        out = np.empty_like(values)
        out[self.order] = values
        return out


def _where_spec(column: FeatureColumn) -> object:
    where = column.feature.where
    return None if where is None else where.spec()


def _evaluate(
    con: duckdb.DuckDBPyConnection, run: SortedRun, conditions: list[str]
) -> np.ndarray | None:
    """Which of the run's rows meet every SQL condition (over alias ``e``; a null is not a
    yes); None where there are no conditions."""
    if not conditions:
        return None
    con.register("_run", run.table)
    try:
        sql = f"SELECT coalesce({' AND '.join(conditions)}, false) FROM _run AS e"
        return con.sql(sql).to_arrow_table().column(0).to_numpy(zero_copy_only=False)
    finally:
        con.unregister("_run")


def _prefix_sums(
    run: SortedRun, field: str | None, counted: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Prefix sums over the run's rows (one more than rows, from 0) of the events counted,
    and, with a field, of its values (int64: a difference is exact even past a wrap; floats
    in ``np.longdouble``)."""
    n = run.table.num_rows
    counts = np.zeros(n + 1, dtype=np.int64)
    counts[1:] = True if counted is None else counted
    np.cumsum(counts, out=counts)
    if field is None:
        return counts, None
    values = run.table[field].fill_null(0).to_numpy()
    exact = values.dtype.kind == "i"
    sums = np.zeros(n + 1, dtype=np.int64 if exact else np.longdouble)
    sums[1:] = values if counted is None else np.where(counted, values, 0)
    np.cumsum(sums, out=sums)
    return counts, sums


def _finish(
    column: FeatureColumn, count: np.ndarray, total: np.ndarray | None, q: _Queries
) -> pa.Array:
    """The column's values from its counts and sums (in query order), in spine order and
    typed as the join types them."""
    kind = column.aggregation.kind
    if kind == "count":
        return pa.array(q.put_back(count), pa.int64())
    assert total is not None
    if kind == "sum":
        if total.dtype == np.int64:
            return pa.array(q.put_back(total), pa.int64())
        return pa.array(q.put_back(total.astype(np.float64)), pa.float64())
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (total / np.maximum(count, 1)).astype(np.float64)
    return _with_nulls(q.put_back(mean), q.put_back(count > 0))


def _choose(
    where: np.ndarray, a: np.ndarray | pa.Array, b: np.ndarray | pa.Array
) -> np.ndarray | pa.Array:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.where(where, a, b)
    return pc.if_else(pa.array(where), pa.array(a), pa.array(b))


def _with_nulls(values: np.ndarray | pa.Array, valid: np.ndarray) -> pa.Array:
    """``values`` with nulls where ``valid`` is False. A NumPy array gets a validity bitmap
    packed from ``valid`` directly (``pa.array(values, mask=...)`` takes ~100 times longer)."""
    if isinstance(values, pa.Array):
        return pc.if_else(pa.array(valid), values, pa.scalar(None, values.type))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    kind = pa.int64() if values.dtype == np.int64 else pa.float64()
    return pa.Array.from_buffers(kind, len(values), [bitmap, pa.py_buffer(values)])
