"""The batch engine: point-in-time feature values for a spine, compiled to DuckDB SQL.

For each feature set, the spine joins its entity's events with ``start <= event_time < t``
(the widest window's start) and every column aggregates with a FILTER on its own start, so
each value follows DESIGN.md's time semantics exactly: ``start = floor((t - W) / h) * h``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from headwater.definitions import Aggregation, FeatureColumn, Stream
from headwater.definitions.expr import sql_name
from headwater.features.history import ARROW_TYPES, history_schema
from headwater.features.plan import FeatureSetPlan
from headwater.log.base import partition_name

ORDER_SHIFT = 1 << 40  # (event_time, offset) packed into one HUGEINT for first/last


def aggregate_sql(agg: Aggregation, condition: str) -> str:
    """The DuckDB aggregate of ``agg`` over joined events ``e`` that satisfy ``condition``."""
    x = f"e.{sql_name(agg.field)}" if agg.field else None
    cond = condition if x is None else f"{condition} AND {x} IS NOT NULL"
    match agg.kind:
        case "count":
            return f"count(e._offset) FILTER (WHERE {condition})"
        case "sum":
            inner = f"sum({x}) FILTER (WHERE {cond})"
            return f"coalesce({inner}, 0)"
        case "mean":
            return f"avg({x}) FILTER (WHERE {cond})"
        case "variance":
            return f"var_pop({x}) FILTER (WHERE {cond})"
        case "stddev":
            return f"stddev_pop({x}) FILTER (WHERE {cond})"
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
    sql = aggregate_sql(agg, condition)
    if agg.kind == "sum":
        field_type = stream.fields[agg.field or ""].dtype
        sql = f"CAST({sql} AS {'BIGINT' if field_type.value == 'int' else 'DOUBLE'})"
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
    limits = {0: int(snapshot.get(stream, 0))}
    for partition in range(1, len(snapshot) + 1):
        end = snapshot.get(partition_name(stream, partition))
        if end is not None:
            limits[partition] = int(end)
    if len(limits) == 1:  # a log with one partition: histories archived before it had any
        return f"_offset < {limits[0]}"
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
) -> pa.Table:
    """One row per spine row (in order): the values of ``columns`` at each row's time."""
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
    con.register("_spine", pa.table(spine))
    try:
        asof = [c for c in columns if _asof_eligible(c)]
        ranged = [c for c in columns if not _asof_eligible(c)]
        source, params = history_source(con, plan.stream, files, snapshot)
        got: dict[str, pa.ChunkedArray] = {}
        if ranged:
            table = _ranged_values(con, plan, ranged, starts, source, params)
            got.update({c.name: table[c.name] for c in ranged})
        for group in _by_filter(asof):
            table = None
            if group[0].feature.where is None and len(keys) == 1:
                table = _sorted_last_values(con, plan, group, spine, source, params)
            if table is None:
                table = _asof_values(con, plan, group, starts, source, params)
            got.update({c.name: table[c.name] for c in group})
    finally:
        con.unregister("_spine")
    return pa.table({c.name: got[c.name] for c in columns})


def _asof_eligible(column: FeatureColumn) -> bool:
    """``last`` of a field that is never null is the latest matching event: an ASOF join
    finds it without joining every event of the window."""
    agg = column.aggregation
    return agg.kind == "last" and not column.feature.stream.fields[agg.field or ""].nullable


def _sorted_last_values(
    con: duckdb.DuckDBPyConnection,
    plan: FeatureSetPlan,
    columns: list[FeatureColumn],
    spine: Mapping[str, np.ndarray],
    source: str,
    params: dict[str, object],
) -> pa.Table | None:
    """``last`` columns of one entity key without a filter, by sorting instead of DuckDB's
    ASOF join; None where (entity code, time) cannot be packed into one int64.

    Each history row gets the int64 ``code * span + (time - t0)`` (``code`` numbers the
    entity keys), and the rows are sorted by it, ties of equal (entity, time) by log
    offset. Then the row an ASOF join would pick for a spine row (the latest of its
    entity before ``t``, by (time, offset)) is the one just before where the spine row's
    own packed value ``code * span + (t - t0)`` would be inserted, if it has the same
    entity: one binary search per spine row, in spine order sorted so that the searches
    walk the history once. Sorting one int64 is several times cheaper than DuckDB's sort of
    the HUGEINT (time, offset) key and the entity, which was most of the join's time."""
    (key,) = plan.entity.keys
    fields = sorted({c.aggregation.field or "" for c in columns})
    selected = ", ".join(sql_name(f) for f in dict.fromkeys([key, *fields]))
    history = con.sql(
        f"SELECT {selected}, _event_time, _offset FROM {source}", params=params or None
    ).to_arrow_table()
    if history.num_rows == 0:
        return None
    times = history["_event_time"].to_numpy()
    spine_times = spine["_t"]
    t0 = int(min(times.min(), spine_times.min()))
    span = int(max(times.max(), spine_times.max())) - t0 + 1
    codes = _entity_codes(history[key], spine[key])
    if codes is None:
        return None
    history_codes, spine_codes, count = codes
    if count * span >= 1 << 62:
        return None
    packed = history_codes * np.int64(span) + (times - t0)
    order = np.argsort(packed)
    packed = packed[order]
    _order_ties_by_offset(packed, order, history["_offset"].to_numpy())
    wanted = spine_codes * np.int64(span) + (spine_times - t0)
    by_time = np.argsort(wanted)
    found = np.empty(len(wanted), dtype=np.int64)
    found[by_time] = np.searchsorted(packed, wanted[by_time]) - 1
    # the row found must be of the same entity (not the last row of an earlier one)
    hit = found >= 0
    hit[hit] = packed[found[hit]] >= spine_codes[hit] * np.int64(span)
    rows = order[np.where(hit, found, 0)]
    row_times = times[rows]
    out: dict[str, pa.Array | pa.ChunkedArray] = {}
    for c in columns:
        valid = hit
        if c.window_us is not None:  # the window's start: floor((t - W) / h) * h
            start = ((spine_times - c.window_us) // (c.hop_us or 1)) * (c.hop_us or 1)
            valid = hit & (row_times >= start)
        indices = pa.array(rows, mask=~valid)
        out[c.name] = history[c.aggregation.field or ""].take(indices)
    return pa.table(out)


def _entity_codes(
    history: pa.ChunkedArray, spine: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Entity keys numbered from 0 (equal keys equal numbers) in the history and the spine,
    and how many numbers; None for a key type other than int and string, or a null key."""
    if history.null_count:
        return None
    if pa.types.is_integer(history.type):
        if spine.dtype.kind not in "iu":  # a null key made it float
            return None
        keys = history.to_numpy()
        wanted = np.asarray(spine, dtype=np.int64)
        low = int(min(keys.min(), wanted.min()))
        count = int(max(keys.max(), wanted.max())) - low + 1
        return keys - low, wanted - low, count
    if pa.types.is_string(history.type) or pa.types.is_large_string(history.type):
        both = pa.chunked_array([*history.chunks, pa.array(spine, type=history.type)])
        encoded = both.combine_chunks().dictionary_encode()
        if encoded.indices.null_count:
            return None
        numbers = encoded.indices.to_numpy().astype(np.int64)
        n = len(history)
        return numbers[:n], numbers[n:], len(encoded.dictionary)
    return None


def _order_ties_by_offset(packed: np.ndarray, order: np.ndarray, offsets: np.ndarray) -> None:
    """Within each run of equal ``packed`` (sorted), put ``order`` in log-offset order, so
    the last row of the run is the latest event, as ``last`` breaks ties."""
    tie = packed[1:] == packed[:-1]
    if not tie.any():
        return
    involved = np.zeros(len(packed), dtype=bool)
    involved[1:] |= tie
    involved[:-1] |= tie
    at = np.flatnonzero(involved)
    rows = order[at]
    order[at] = rows[np.lexsort((offsets[rows], packed[at]))]


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
