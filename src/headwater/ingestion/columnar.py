"""Validating a whole Arrow table at once: the fast path of bulk ingestion.

Rows whose every value is certainly valid are checked column by column; any row this path
cannot vouch for (a null in a required field, a time out of bounds, an id that is not a
usable string) goes to the row-by-row validator, so every rejection still gets its reason and
the two paths accept exactly the same events. A column whose type does not map losslessly
onto its field's type sends the whole table to the row-by-row path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.definitions import DType, Stream
from headwater.ingestion.validate import (
    CONTROL_CHARACTERS,
    MAX_TIMESTAMP_US,
    MIN_TIMESTAMP_US,
    TimePolicy,
)
from headwater.log.ids import new_id


@dataclass
class Checked:
    """The rows the columnar path vouches for, and the indices left to the row validator."""

    rows: list[dict[str, Any]]
    event_ids: list[str]
    event_times: list[int]
    indices: np.ndarray
    fallback: np.ndarray
    fresh_ids: bool  # the ids were generated here


def _cast(column: pa.ChunkedArray, dtype: DType) -> pa.ChunkedArray | None:
    """The column in its canonical type, or None when the scalar rules might disagree."""
    t = column.type
    try:
        if dtype is DType.STRING:
            return (
                column.cast(pa.string())
                if pa.types.is_string(t) or pa.types.is_large_string(t)
                else None
            )
        if dtype is DType.INT:
            if pa.types.is_integer(t):
                return column.cast(pa.int64())
            if pa.types.is_floating(t):
                return column.cast(pa.int64())  # safe cast: raises unless every value is whole
            return None
        if dtype is DType.FLOAT:
            if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
                return None
            out = column.cast(pa.float64())
            return out if pc.all(pc.is_finite(out)).as_py() in (True, None) else None
        if dtype is DType.BOOL:
            return column if pa.types.is_boolean(t) else None
        if dtype is DType.TIMESTAMP and pa.types.is_timestamp(t):
            if t.tz is None:
                column = column.cast(pa.timestamp(t.unit, tz="UTC"))
            return column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return None


def check_table(stream: Stream, table: pa.Table, policy: TimePolicy) -> Checked | None:
    """Vouch for the rows of ``table`` that are certainly valid; None: use the row path."""
    names = set(table.column_names)
    extra = names - set(stream.fields) - {stream.id_field}
    if extra and stream.unknown_fields != "drop":
        return None  # reject or keep: per-row reasons or per-row payloads
    n = table.num_rows
    good = np.ones(n, dtype=bool)
    columns: dict[str, pa.ChunkedArray] = {}
    for name, spec in stream.fields.items():
        if name not in names:
            column = pa.chunked_array([pa.nulls(n)], pa.null())
            cast: pa.ChunkedArray | None = column
        else:
            cast = _cast(table[name], spec.dtype)
        if cast is None:
            return None
        if not spec.nullable:
            good &= ~np.asarray(cast.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        columns[name] = cast
    times = columns[stream.time].fill_null(0).to_numpy()
    good &= (times >= 0) & (times <= policy.now_us + policy.max_future_us)
    for name, spec in stream.fields.items():
        values = columns[name]
        if spec.dtype is DType.TIMESTAMP and name != stream.time:
            inside = pc.and_(
                pc.greater_equal(values, MIN_TIMESTAMP_US), pc.less_equal(values, MAX_TIMESTAMP_US)
            )
            good &= np.asarray(inside.fill_null(True).to_numpy(zero_copy_only=False), dtype=bool)
        if name in stream.keys and spec.dtype is DType.STRING:
            control = pc.match_substring_regex(values, CONTROL_CHARACTERS)
            good &= ~np.asarray(control.fill_null(False).to_numpy(zero_copy_only=False), bool)
    if stream.allowed_lateness_us is not None:
        good &= times >= policy.now_us - stream.allowed_lateness_us
    if stream.id_field in names:
        ids = table[stream.id_field]
        if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
            return None
        lengths = pc.fill_null(pc.utf8_length(ids), 0).to_numpy()
        good &= (lengths > 0) & (lengths <= 256)
        control = pc.match_substring_regex(ids, CONTROL_CHARACTERS)
        good &= ~np.asarray(control.fill_null(False).to_numpy(zero_copy_only=False), bool)
        event_ids = ids.to_pylist()
    else:
        event_ids = [new_id() for _ in range(n)]
    indices = np.flatnonzero(good)
    canonical = pa.table({**columns, stream.id_field: pa.array(event_ids, pa.string())}).take(
        indices
    )
    rows = canonical.to_pylist()
    return Checked(
        rows,
        [event_ids[i] for i in indices],
        times[indices].tolist(),
        indices,
        np.flatnonzero(~good),
        stream.id_field not in names,
    )
