"""The batch engine's sorted path for ``last`` columns gives exactly what its DuckDB ASOF join
gives, on histories with many ties of (entity, time), keys absent from the history, spine times
before every event, and snapshots."""

from __future__ import annotations

import random

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headwater import Entity, Feature, Stream, agg
from headwater.definitions.windows import DAY, HOUR, MINUTE
from headwater.features import batch
from headwater.features.plan import plan_feature_sets
from headwater.log.base import partition_name

T0 = 1_767_225_600_000_000  # 2026-01-01


def _definitions(key_type: str) -> list[Feature]:
    stream = Stream(
        "obs",
        fields={"who": key_type, "v": "float", "n": "int", "s": "string", "ts": "timestamp"},
        key="who",
        time="ts",
        required=["v", "n", "s"],
        owner="t",
        description="d",
    )
    who = Entity("who", keys="who", owner="t", description="d")
    return [
        Feature(
            name,
            entity=who,
            stream=stream,
            aggregation=agg.last(field),
            windows=windows,
            hop=hop,
            owner="t",
            description="d",
        )
        for name, field, windows, hop in [
            ("lv", "v", ["2h", "1d", "lifetime"], "1m"),
            ("ln", "n", ["1h"], "1s"),
            ("ls", "s", ["3h", "lifetime"], "10m"),
        ]
    ]


def _history(key_type: str, n: int, seed: int) -> pa.Table:
    """Events in two partitions, times on a coarse grid (many equal (entity, time) pairs)."""
    rnd = random.Random(seed)
    keys = [rnd.randrange(40) for _ in range(n)]
    offsets = {0: 0, 1: 0}
    rows = []
    for k in keys:
        part = k % 2
        rows.append(
            {
                "_offset": offsets[part],
                "_partition": part,
                "_event_time": T0 + rnd.randrange(3 * DAY // (10 * MINUTE)) * 10 * MINUTE,
                "who": str(k) if key_type == "string" else k - 20,  # negative ints too
                "v": rnd.randrange(-100, 100) / 4,
                "n": rnd.randrange(1000),
                "s": rnd.choice("abcdefg"),
            }
        )
        offsets[part] += 1
    rnd.shuffle(rows)  # files hold rows in no particular order
    return pa.Table.from_pylist(rows)


@pytest.mark.parametrize("key_type", ["string", "int"])
@pytest.mark.parametrize("snapshot", [None, "half"])
def test_sorted_last_values_are_the_asof_joins(tmp_path, monkeypatch, key_type, snapshot):
    (plan,) = plan_feature_sets(_definitions(key_type))
    columns = [c for f in plan.features for c in f.columns]
    history = _history(key_type, 3000, seed=5)
    files = []
    for i in range(3):  # three files, as the offline store's days and partitions
        path = tmp_path / f"part-{i}.parquet"
        pq.write_table(history.slice(i * 1000, 1000), path)
        files.append(str(path))
    rnd = random.Random(9)
    size = 2000
    raw_keys = [rnd.randrange(-5, 45) for _ in range(size)]  # some never in the history
    spine_keys = pa.table({"who": [str(k) if key_type == "string" else k - 20 for k in raw_keys]})
    # times on the events' grid (exact ties with t), just after it, and before any event
    times = np.array(
        [
            T0
            + rnd.randrange(-HOUR, 3 * DAY + HOUR) // (10 * MINUTE) * 10 * MINUTE
            + rnd.choice([0, 0, 1, 7 * MINUTE])
            for _ in range(size)
        ],
        dtype=np.int64,
    )
    limits = None
    if snapshot:
        limits = {partition_name("obs", p): 400 + 300 * p for p in (0, 1)}
    with duckdb.connect() as con:
        fast = batch.feature_set_values(con, plan, columns, spine_keys, times, files, limits)
        calls = []
        original = batch._sorted_last_values
        monkeypatch.setattr(
            batch, "_sorted_last_values", lambda *a: calls.append(original(*a)) and None
        )
        slow = batch.feature_set_values(con, plan, columns, spine_keys, times, files, limits)
    assert calls and calls[0] is not None  # the sorted path answered the first call
    assert fast.schema == slow.schema
    assert fast.to_pylist() == slow.to_pylist()
    found = sum(v is not None for v in fast["lv_lifetime"].to_pylist())
    assert size * 0.7 < found < size  # mostly found, not always
    assert any(v is None for v in fast["ln_1h"].to_pylist())
