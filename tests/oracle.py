"""A brute-force evaluation of the time semantics (docs/concepts.md), written independently
of the engines."""

from __future__ import annotations

import math
import statistics
from typing import Any

from headwater.definitions import FeatureColumn


def window_bounds(column: FeatureColumn, t: int) -> tuple[int | None, int]:
    """[start, t): start = floor((t - W) / h) * h, or no start for lifetime features."""
    if column.window_us is None:
        return None, t
    assert column.hop_us is not None
    return math.floor((t - column.window_us) / column.hop_us) * column.hop_us, t


def passes(column: FeatureColumn, row: dict[str, Any]) -> bool:
    where = column.feature.where
    return where is None or where.evaluate(row) is True


def evaluate(
    column: FeatureColumn,
    events: list[tuple[int, int, dict[str, Any]]],
    key: dict[str, Any],
    t: int,
) -> Any:
    """The value of ``column`` for the entity ``key`` at ``t`` over (event_time, offset, row)."""
    start, end = window_bounds(column, t)
    agg = column.aggregation
    chosen = [
        (ts, off, row)
        for ts, off, row in events
        if all(str(row[k]) == str(v) for k, v in key.items())
        and (start is None or ts >= start)
        and ts < end
        and passes(column, row)
    ]
    if agg.kind == "count":
        return len(chosen)
    values = [(ts, off, row[agg.field]) for ts, off, row in chosen if row[agg.field] is not None]
    plain = [v for _, _, v in values]
    if agg.kind == "sum":
        return sum(plain) if plain else 0
    if not plain:
        return {"last_k": [], "count_distinct": 0}.get(agg.kind)
    match agg.kind:
        case "mean":
            return sum(plain) / len(plain)
        case "variance":
            return statistics.pvariance(plain)
        case "stddev":
            return statistics.pstdev(plain)
        case "min":
            return min(plain)
        case "max":
            return max(plain)
        case "last":
            return max(values, key=lambda e: (e[0], e[1]))[2]
        case "first":
            return min(values, key=lambda e: (e[0], e[1]))[2]
        case "last_k":
            ordered = sorted(values, key=lambda e: (e[0], e[1]), reverse=True)
            return [v for _, _, v in ordered[: agg.k]]
        case "count_distinct":
            return len(set(plain))
    raise AssertionError(agg.kind)


def same(a: Any, b: Any) -> bool:
    """Equal, up to floating-point rounding (relative 1e-9)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not (isinstance(a, bool) or isinstance(b, bool))
    ):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b
