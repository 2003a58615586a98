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
from headwater.history.engines.sorted_history import (
    SortedRun,
    read_rows,
    read_run,
    sort_rows,
)
from headwater.history.engines.sorted_queries import Queries
from headwater.history.engines.sql import offsets_below, snapshot_limits
from headwater.history.schema import ARROW_TYPES
from headwater.stores.offline.base import OfflineStore


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
        keys: Sequence[str] | None = None,
    ) -> SortedView | None:
        """The stream's copy sorted by ``keys`` (by default its own), or None where it has
        no usable one. A snapshot older than the copy hides
        the copy's rows at or past its offsets (every value is then computed as if they were
        not there: a training set pinned to a snapshot gets the same values whichever copy
        it finds)."""
        run = read_run(offline, stream, keys)
        if run is None:
            return None
        until = None if snapshot is None else snapshot_limits(snapshot, stream.name)
        hidden: list[str | None] = [None]
        if until is not None and any(until.get(p, 0) < end for p, end in run.covered.items()):
            hidden = [f"({offsets_below(until)})"]
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
        types = pa.schema([(k, ARROW_TYPES[stream.fields[k].dtype]) for k in run.keys_])
        return cls(runs, types, hidden)

    def _keys(self, keys: pa.Table) -> pa.Table:
        """The spine's key columns, cast to the stream's types."""
        return keys.select(self.key_types.names).cast(self.key_types)

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
        q = Queries(self.runs, self.hidden, con, self._keys(keys), times)
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

    def _extreme(self, q: Queries, column: FeatureColumn) -> pa.Array | None:
        """min (max) of the kept values in each window: a reduction over the rows between
        the window's bounds in each run, then over the runs (exact, in any order). None where
        the field is not an int or float, holds NaN, or the windows would add up to more than
        ``sorted_queries.SCAN_BUDGET`` times the rows and queries (long lifetimes of busy keys)."""
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

    def _pick(self, q: Queries, column: FeatureColumn) -> pa.Array:
        best_run, rows = q.pick(column)
        field = column.aggregation.field or ""
        value = self.runs[0].gather(field, rows[0])
        for i in range(1, len(self.runs)):
            value = _choose(best_run == i, self.runs[i].gather(field, rows[i]), value)
        return _with_nulls(q.put_back(value), q.found(best_run))

    def _last_k(self, q: Queries, column: FeatureColumn) -> pa.Array:
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

    def _total(self, q: Queries, column: FeatureColumn) -> pa.Array:
        agg, start = column.aggregation, q.start(column)
        field = None if agg.kind == "count" else agg.field  # a count counts events
        count = np.zeros(len(q.times), dtype=np.int64)
        total: np.ndarray | None = None
        for i in range(len(self.runs)):
            count += q.count_at(i, field, column, "t") - q.count_at(i, field, column, start)
            if field is not None:
                part = q.sum_at(i, column, "t") - q.sum_at(i, column, start)
                total = part if total is None else total + part
        return _finish(column, count, total, q)


def _finish(
    column: FeatureColumn, count: np.ndarray, total: np.ndarray | None, q: Queries
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
