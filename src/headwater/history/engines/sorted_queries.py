"""One spine's queries against a stream's sorted runs: the bounds of each window, and what
columns share over them (the rows each event filter keeps, their prefix sums, picks)."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from headwater.definitions import FeatureColumn
from headwater.definitions.expr import sql_name
from headwater.history.engines.sorted_history import SortedRun

# min/max scan the rows of every window: beyond this many times the rows and queries (busy
# keys' lifetimes), the join does it
SCAN_BUDGET = 16
Pick = tuple[np.ndarray, list[np.ndarray]]  # the run of each query's event, each run's rows


class Kept:
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


class Queries:
    """One spine's queries against a view, in the order of their search in the copy (so that
    consecutive searches and reads walk nearby memory), with what columns share: the bounds
    of each window, the events each filter keeps, their prefix sums."""

    def __init__(
        self,
        runs: list[SortedRun],
        hidden: list[str | None],
        con: duckdb.DuckDBPyConnection,
        keys: pa.Table,
        times: np.ndarray,
    ) -> None:
        """``runs`` the copy first; ``hidden`` as ``SortedView`` has it; ``keys`` the key
        fields' columns, of the stream's types; ``times`` the spine's."""
        copy = runs[0]
        self.runs, self.hidden, self.con = runs, hidden, con
        ranks = [run.ranks(keys) for run in runs]
        self.order = np.argsort(ranks[0] * copy.span + copy.slots(times))
        self.times = times[self.order]
        self.ranks = [rank[self.order] for rank in ranks]
        self._ends: dict[tuple[int, object], np.ndarray] = {}
        self._counted: dict[tuple[int, str], np.ndarray | None] = {}
        self._kept: dict[tuple[int, str], Kept | None] = {}
        self._counts: dict[tuple[int, str], np.ndarray] = {}
        self._count_at: dict[tuple[int, str, object], np.ndarray] = {}
        self._sums: dict[tuple[int, str], np.ndarray] = {}
        self._sum_at: dict[tuple[int, str, object], np.ndarray] = {}
        self._inverse: pa.Array | None = None
        self._found: dict[int, np.ndarray] = {}  # by the id of a pick's (cached) best_run
        self._picks: dict[tuple[bool, object, tuple[int, ...]], Pick] = {}

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
            self._counted[(i, spec)] = evaluate(self.con, run, conditions)
        return self._counted[(i, spec)]

    def kept(self, i: int, column: FeatureColumn) -> Kept | None:
        field = column.aggregation.field
        key = (i, repr((field, where_spec(column))))
        if key not in self._kept:
            counted = self.counted(i, field, column)
            self._kept[key] = None if counted is None else Kept(counted)
        return self._kept[key]

    def count_at(
        self, i: int, field: str | None, column: FeatureColumn, bound: object
    ) -> np.ndarray:
        """How many of run i's rows before a bound ``counted`` keeps (a prefix sum, shared by
        the columns counting the same events: a 1h and a 30d window share the one at t)."""
        spec = repr((field, where_spec(column)))
        if (i, spec) not in self._counts:
            counted = self.counted(i, field, column)
            rows = self.runs[i].table.num_rows
            self._counts[(i, spec)] = (
                np.arange(rows + 1, dtype=np.int64) if counted is None else prefix_sum(counted)
            )
        if (i, spec, bound) not in self._count_at:
            self._count_at[(i, spec, bound)] = self._counts[(i, spec)][self.end(i, bound)]
        return self._count_at[(i, spec, bound)]

    def sum_at(self, i: int, column: FeatureColumn, bound: object) -> np.ndarray:
        """The sum of the column's field over run i's kept rows before a bound (a prefix
        sum: int64, a difference exact even past a wrap; floats in ``np.longdouble``)."""
        field = column.aggregation.field or ""
        spec = repr((field, where_spec(column)))
        if (i, spec) not in self._sums:
            values = self.runs[i].table[field].fill_null(0).to_numpy()
            counted = self.counted(i, field, column)
            kept = values if counted is None else np.where(counted, values, 0)
            self._sums[(i, spec)] = prefix_sum(kept, np.int64 if kept.dtype.kind == "i" else None)
        if (i, spec, bound) not in self._sum_at:
            self._sum_at[(i, spec, bound)] = self._sums[(i, spec)][self.end(i, bound)]
        return self._sum_at[(i, spec, bound)]

    def pick(self, column: FeatureColumn) -> Pick:
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
        kept = self.count_at(i, field, column, "t") > self.count_at(
            i, field, column, self.start(column)
        )
        return value, kept

    def put_back(self, values: np.ndarray | pa.Array) -> np.ndarray | pa.Array:
        """Values computed in query order put back in spine order."""
        if isinstance(values, pa.Array):
            if self._inverse is None:
                inverse = np.empty(len(self.order), dtype=np.int64)
                inverse[self.order] = np.arange(len(self.order))
                self._inverse = pa.array(inverse)
            return values.take(self._inverse)
        out = np.empty_like(values)
        out[self.order] = values
        return out


def where_spec(column: FeatureColumn) -> object:
    where = column.feature.where
    return None if where is None else where.spec()


def evaluate(
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


def prefix_sum(values: np.ndarray, dtype: type | None = np.int64) -> np.ndarray:
    """0, then the running sum of ``values`` (one more than values), in ``dtype``
    (``np.longdouble`` where None)."""
    sums: np.ndarray = np.zeros(len(values) + 1, dtype=np.longdouble if dtype is None else dtype)
    sums[1:] = values
    np.cumsum(sums, out=sums)
    return sums
