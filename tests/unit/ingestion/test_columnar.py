"""Ingesting a table checks whole columns at once and accepts exactly what row-by-row does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pandas as pd
import pyarrow as pa
import pytest

from headwater import Project
from headwater.ingestion.columnar import check_table
from headwater.ingestion.validate import TimePolicy
from headwater.log.base import DEAD_LETTER_STREAM
from tests.conftest import SMALL_DEFINITIONS

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _tables() -> dict[str, pa.Table]:
    ts = [NOW - timedelta(minutes=i) for i in range(6)]
    base = {
        "event_id": ["a", "b", "c", "a", "e", "f"],  # "a" twice: accepted once
        "user_id": ["u1", "u2", None, "u1", "u3", "u4"],  # a missing key
        "amount": [1.5, None, 3.0, 1.5, 4.0, 5.0],  # a missing required value
        "status": ["paid", "paid", "paid", "paid", None, "failed"],
        "ts": ts[:4] + [NOW + timedelta(days=1), ts[5]],  # one from the future
    }
    ints = dict(base, amount=[1, None, 3, 1, 4, 5])  # whole numbers for a float field
    strings = dict(base, amount=["1.5", None, "3", "1.5", "4", "5"])  # not numbers: the row path
    return {
        "mixed": pa.Table.from_pandas(pd.DataFrame(base), preserve_index=False),
        "ints": pa.table(
            {k: pa.array(v, pa.int64()) if k == "amount" else v for k, v in ints.items()}
        ),
        "strings": pa.table(strings),
    }


@pytest.mark.parametrize(
    ("case", "accepted", "rejected"), [("mixed", 2, 3), ("ints", 2, 3), ("strings", 0, 6)]
)
def test_the_table_path_accepts_and_rejects_exactly_like_the_row_path(
    project_factory, case, accepted, rejected
):
    table = _tables()[case]
    with (
        Project(project_factory(SMALL_DEFINITIONS), clock=lambda: NOW) as fast,
        Project(project_factory(SMALL_DEFINITIONS), clock=lambda: NOW) as slow,
    ):
        got = fast.ingest("orders", table)
        want = fast_rows = slow.ingest("orders", table.to_pylist())
        assert (got.accepted, got.duplicates, got.offsets) == (
            want.accepted,
            want.duplicates,
            want.offsets,
        )
        assert got.rejected == want.rejected and len(got.rejected) == rejected
        for p in (fast, slow):
            assert p.log.end_offset(DEAD_LETTER_STREAM) == rejected
        logged = [
            [orjson.loads(r.payload) for r in p.log.read("orders", 0, 100)] for p in (fast, slow)
        ]
        assert logged[0] == logged[1] and len(logged[0]) == fast_rows.accepted == accepted


def test_the_columnar_check_vouches_only_for_rows_it_is_sure_of():
    from headwater import Stream

    stream = Stream(
        "s",
        fields={"k": "string", "x": "float"},
        key="k",
        time="ts",
        required=["x"],
        owner="o",
        description="d",
    )
    policy = TimePolicy(int(NOW.timestamp() * 1e6), 0)
    table = pa.table(
        {
            "k": ["a", "b"],
            "x": [1.0, float("inf")],
            "ts": pa.array([NOW, NOW], pa.timestamp("us", tz="UTC")),
        }
    )
    assert check_table(stream, table, policy) is None  # inf: the row path says why
    table = pa.table(
        {
            "k": ["a", None],
            "x": [1.0, 2.0],
            "ts": pa.array([NOW, NOW], pa.timestamp("us", tz="UTC")),
        }
    )
    checked = check_table(stream, table, policy)
    assert checked is not None
    assert checked.indices.tolist() == [0] and checked.fallback.tolist() == [1]
    assert checked.rows[0]["ts"] == int(NOW.timestamp() * 1e6)
