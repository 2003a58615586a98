"""DuckDB SQL over the history: point-in-time feature values for a spine, and connections.

For each feature set, the spine joins its entity's events with ``start <= event_time < t``
(the widest window's start) and every column aggregates with a FILTER on its own start, so
each value follows the time semantics of docs/concepts.md exactly:
``start = floor((t - W) / h) * h``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Protocol

import duckdb
import numpy as np
import pyarrow as pa

from headwater.definitions import Aggregation, FeatureColumn, Stream
from headwater.definitions.expr import sql_name
from headwater.features.plan import FeatureSetPlan
from headwater.history.schema import ARROW_TYPES, history_schema
from headwater.log.base import partition_name
from headwater.stores.offline.base import OfflineStore


class ColumnSource(Protocol):
    """Answers some feature columns without the join (the sorted history's view)."""

    def holds(self, column: FeatureColumn) -> bool: ...

    def values(
        self,
        con: duckdb.DuckDBPyConnection,
        columns: Sequence[FeatureColumn],
        keys: pa.Table,
        times: np.ndarray,
    ) -> dict[str, pa.Array]:
        """The columns it answers (it may leave out some of ``columns``)."""
        ...


@contextmanager
def connect(
    offline: OfflineStore, threads: int | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection that reads the files of ``offline`` (registering its fsspec
    filesystem where they are URLs), closed on exit."""
    con = duckdb.connect()
    try:
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        fs = offline.filesystem()
        if fs is not None:
            protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
            # DuckDB keeps one filesystem per protocol and connection: the first one stays.
            if not set(protocols) & set(con.list_filesystems()):
                con.register_filesystem(fs)
        yield con
    finally:
        con.close()


# what a sorted history answers: the row at a bound, and differences of prefix sums
PICKS = ("last", "first", "last_k", "min", "max")  # exact whatever the order: no rounding
TOTALS = ("count", "sum", "mean")
ORDER_SHIFT = 1 << 40  # (event_time, offset) packed into one HUGEINT for first/last


def aggregate_sql(agg: Aggregation, condition: str, exact: bool = False) -> str:
    """The DuckDB aggregate of ``agg`` over joined events ``e`` that satisfy ``condition``.

    Floating-point sums depend on the order they add up in, and DuckDB's threads combine
    partial sums in whichever order they finish: ``sum``, ``mean``, ``variance`` and
    ``stddev`` therefore add their values in ascending order (an ordered aggregate), so the
    same events give the same bits whatever the files, row groups or threads they come from.
    ``exact``: the field is an integer, whose ``sum`` and ``mean`` DuckDB computes exactly
    (``variance`` still goes through doubles)."""
    x = f"e.{sql_name(agg.field)}" if agg.field else None
    cond = condition if x is None else f"{condition} AND {x} IS NOT NULL"
    ordered = "" if exact else f" ORDER BY {x}"
    match agg.kind:
        case "count":
            return f"count(e._offset) FILTER (WHERE {condition})"
        case "sum":
            inner = f"sum({x}{ordered}) FILTER (WHERE {cond})"
            return f"coalesce({inner}, 0)"
        case "mean":
            return f"avg({x}{ordered}) FILTER (WHERE {cond})"
        case "variance":
            return f"var_pop({x} ORDER BY {x}) FILTER (WHERE {cond})"
        case "stddev":
            return f"stddev_pop({x} ORDER BY {x}) FILTER (WHERE {cond})"
        case "min" | "max":
            return f"{agg.kind}({x}) FILTER (WHERE {cond})"
        case "last":
            return f"arg_max({x}, e._ord) FILTER (WHERE {cond})"
        case "first":
            return f"arg_min({x}, e._ord) FILTER (WHERE {cond})"
        case "last_k":
            listed = f"list({x} ORDER BY e._ord DESC) FILTER (WHERE {cond})"
            return f"list_slice(coalesce({listed}, []), 1, {agg.k})"
        case "count_distinct":
            return f"count(DISTINCT {x}) FILTER (WHERE {cond})"
    raise ValueError(f"no SQL for aggregation {agg.kind!r}")


def _column_sql(column: FeatureColumn, start_col: str | None) -> str:
    parts = ["TRUE"]
    if start_col is not None:
        parts.append(f"e._ts >= s.{start_col}")
    if column.feature.where is not None:
        parts.append(column.feature.where.to_sql("e"))
    sql = typed_aggregate_sql(column.aggregation, column.feature.stream, " AND ".join(parts))
    return f"{sql} AS {sql_name(column.name)}"


def typed_aggregate_sql(agg: Aggregation, stream: Stream, condition: str) -> str:
    integer = bool(agg.field) and stream.fields[agg.field or ""].dtype.value == "int"
    sql = aggregate_sql(agg, condition, exact=integer)
    if agg.kind == "sum":
        sql = f"CAST({sql} AS {'BIGINT' if integer else 'DOUBLE'})"
    return sql


def history_source(
    con: duckdb.DuckDBPyConnection,
    stream: Stream,
    files: list[str],
    snapshot: Mapping[str, int] | None,
) -> tuple[str, dict[str, object]]:
    """A FROM clause over a stream's history and its params; with a ``snapshot`` (log end
    offsets named by ``partition_name(stream, partition)``), only the rows below them."""
    params: dict[str, object] = {}
    if files:
        source, params = "read_parquet($files, union_by_name = true)", {"files": files}
    else:
        name = f"_empty_{stream.name}"
        con.register(name, history_schema(stream).empty_table())
        source = name
    if snapshot is not None:
        source = f"(SELECT * FROM {source} WHERE {snapshot_condition(snapshot, stream.name)})"
    return source, params


def snapshot_condition(snapshot: Mapping[str, int], stream: str) -> str:
    """SQL keeping the history rows below a snapshot's offsets, partition by partition.

    >>> snapshot_condition({"orders": 7}, "orders")
    '_offset < 7'
    >>> snapshot_condition({"orders": 7, "orders@p1": 3}, "orders")
    '_offset < CASE coalesce(_partition, 0) WHEN 0 THEN 7 WHEN 1 THEN 3 ELSE 0 END'
    """
    return offsets_below(snapshot_limits(snapshot, stream))


def snapshot_limits(snapshot: Mapping[str, int], stream: str) -> dict[int, int]:
    """A snapshot's end offsets of one stream, by log partition (partition 0's is 0 where the
    snapshot has none; other partitions it does not name are absent)."""
    limits = {0: int(snapshot.get(stream, 0))}
    for partition in range(1, len(snapshot) + 1):
        end = snapshot.get(partition_name(stream, partition))
        if end is not None:
            limits[partition] = int(end)
    return limits


def offsets_below(limits: Mapping[int, int]) -> str:
    """SQL keeping the rows below the end offset of their log partition (0 where ``limits``
    has none).

    >>> offsets_below({0: 7}), offsets_below({1: 3})
    ('_offset < 7', '_offset < CASE coalesce(_partition, 0) WHEN 1 THEN 3 ELSE 0 END')
    """
    if set(limits) <= {0}:  # a log with one partition: histories archived before it had any
        return f"_offset < {limits.get(0, 0)}"
    cases = " ".join(f"WHEN {p} THEN {end}" for p, end in sorted(limits.items()))
    return f"_offset < CASE coalesce(_partition, 0) {cases} ELSE 0 END"


def events_cte(fields: list[str], source: str, where: str = "") -> str:
    """``WITH e AS (...)``: a history's events with ``_ts`` (event time) and ``_ord``, the
    (event time, log offset) order that ``last``/``first`` ties follow, packed in a HUGEINT."""
    columns = ", ".join(f"e.{sql_name(f)}" for f in fields)
    return f"""WITH e AS (
  SELECT {columns}, e._event_time AS _ts, e._offset,
         CAST(e._event_time AS HUGEINT) * {ORDER_SHIFT} + e._offset AS _ord
  FROM {source} AS e {where}
)"""


def feature_set_values(
    con: duckdb.DuckDBPyConnection,
    plan: FeatureSetPlan,
    columns: Sequence[FeatureColumn],
    spine_keys: pa.Table,
    times: np.ndarray,
    files: list[str],
    snapshot: Mapping[str, int] | None = None,
    view: ColumnSource | None = None,
) -> pa.Table:
    """One row per spine row (in order): the values of ``columns`` at each row's time;
    with ``view`` (the stream's sorted history), the ``last``, ``first``, ``min``, ``max``,
    ``count``, ``sum`` and ``mean`` columns come from binary searches in it rather than from a
    join (``view.values`` leaves out those it finds too costly, for the join)."""
    spine = {"_row": np.arange(len(times), dtype=np.int64), "_t": times}
    keys = plan.entity.keys
    for k in keys:
        spine[k] = (
            spine_keys[k]
            .cast(ARROW_TYPES[plan.stream.fields[k].dtype])
            .to_numpy(zero_copy_only=False)
        )
    starts: dict[tuple[int, int], str] = {}
    for c in columns:
        if c.window_us is not None and c.hop_us is not None:
            name = starts.setdefault((c.window_us, c.hop_us), f"_start{len(starts)}")
            spine[name] = ((times - c.window_us) // c.hop_us) * c.hop_us
    got: dict[str, pa.ChunkedArray | pa.Array] = {}
    if view is not None:  # sorted by the entity's keys
        viewed = [
            c
            for c in columns
            if view.holds(c)
            and (
                c.aggregation.kind in PICKS
                or (
                    c.aggregation.kind in TOTALS
                    and (snapshot is None or _exact_total(c, plan.stream))
                )
            )
        ]
        if viewed:
            got.update(view.values(con, viewed, spine_keys.select(list(keys)), times))
    con.register("_spine", pa.table(spine))
    try:
        asof = [c for c in columns if _asof_eligible(c) and c.name not in got]
        ranged = [c for c in columns if not _asof_eligible(c) and c.name not in got]
        source, params = history_source(con, plan.stream, files, snapshot)
        if ranged:
            table = _ranged_values(con, plan, ranged, starts, source, params)
            got.update({c.name: table[c.name] for c in ranged})
        for group in _by_filter(asof):
            table = _asof_values(con, plan, group, starts, source, params)
            got.update({c.name: table[c.name] for c in group})
    finally:
        con.unregister("_spine")
    return pa.table({c.name: got[c.name] for c in columns})


def _exact_total(column: FeatureColumn, stream: Stream) -> bool:
    """Whether prefix sums give the join's value to the bit: counts and sums of ints do;
    means and sums of floats round differently (to ~1e-15), so a training set pinned to a
    snapshot (one ``train --reproduce`` rebuilds, whose data hash must not change whether
    the sorted copy then covers the snapshot or not) takes them from the join."""
    agg = column.aggregation
    return agg.kind == "count" or (
        agg.kind == "sum" and stream.fields[agg.field or ""].dtype.value == "int"
    )


def _asof_eligible(column: FeatureColumn) -> bool:
    """``last`` of a field that is never null is the latest matching event: an ASOF join
    finds it without joining every event of the window."""
    agg = column.aggregation
    return agg.kind == "last" and not column.feature.stream.fields[agg.field or ""].nullable


def _by_filter(columns: list[FeatureColumn]) -> list[list[FeatureColumn]]:
    groups: dict[str, list[FeatureColumn]] = {}
    for c in columns:
        where = c.feature.where
        groups.setdefault(repr(None if where is None else where.spec()), []).append(c)
    return list(groups.values())


def _asof_values(
    con: duckdb.DuckDBPyConnection,
    plan: FeatureSetPlan,
    columns: list[FeatureColumn],
    starts: dict[tuple[int, int], str],
    source: str,
    params: dict[str, object],
) -> pa.Table:
    keys = plan.entity.keys
    fields = sorted({*keys, *(c.aggregation.field or "" for c in columns)})
    where = columns[0].feature.where
    condition = "" if where is None else f"WHERE {where.to_sql('e')}"
    values = []
    for c in columns:
        value = f"e.{sql_name(c.aggregation.field or '')}"
        if c.window_us is not None:
            start = starts[(c.window_us, c.hop_us or 0)]
            value = f"CASE WHEN e._ts >= s.{start} THEN {value} END"
        values.append(f"{value} AS {sql_name(c.name)}")
    join_keys = " AND ".join(f"e.{sql_name(k)} = s.{sql_name(k)}" for k in keys)
    sql = f"""{events_cte(fields, source, condition)}
SELECT s._row, {", ".join(values)}
FROM _spine s ASOF LEFT JOIN e ON {join_keys} AND CAST(s._t AS HUGEINT) * {ORDER_SHIFT} > e._ord
ORDER BY s._row
"""
    return con.sql(sql, params=params or None).to_arrow_table()


def _ranged_values(
    con: duckdb.DuckDBPyConnection,
    plan: FeatureSetPlan,
    columns: list[FeatureColumn],
    starts: dict[tuple[int, int], str],
    source: str,
    params: dict[str, object],
) -> pa.Table:
    """Every other aggregation: join the events of the widest window, FILTER per column."""
    keys = plan.entity.keys
    lifetime = any(c.window_us is None for c in columns)
    used = [starts[(c.window_us, c.hop_us or 0)] for c in columns if c.window_us is not None]
    fields = sorted(
        {
            *keys,
            *(c.aggregation.field for c in columns if c.aggregation.field),
            *(f for c in columns if c.feature.where for f in c.feature.where.fields()),
        }
    )
    join_keys = " AND ".join(f"e.{sql_name(k)} = s.{sql_name(k)}" for k in keys)
    lower = ""
    if not lifetime and used:
        distinct = list(dict.fromkeys(used))
        lower = (
            f" AND e._ts >= s.{distinct[0]}"
            if len(distinct) == 1
            else " AND e._ts >= LEAST(" + ", ".join(f"s.{n}" for n in distinct) + ")"
        )
    aggregates = ",\n  ".join(
        _column_sql(c, None if c.window_us is None else starts[(c.window_us, c.hop_us or 0)])
        for c in columns
    )
    sql = f"""{events_cte(fields, source)}
SELECT s._row,
  {aggregates}
FROM _spine s LEFT JOIN e ON {join_keys} AND e._ts < s._t{lower}
GROUP BY s._row
ORDER BY s._row
"""
    return con.sql(sql, params=params or None).to_arrow_table()
