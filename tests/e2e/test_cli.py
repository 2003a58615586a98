"""The CLI as a user runs it: init, plan, apply, ingest files, process, features, training-set."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from headwater import Project
from headwater.log.base import DEAD_LETTER_STREAM


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "headwater", *args], capture_output=True, text=True, timeout=300
    )
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_init_plan_apply(tmp_path):
    folder = tmp_path / "shop"
    run("init", str(folder))
    out = run("plan", "--project", str(folder)).stdout
    assert "added" in out and "spend" in out
    run("apply", "--project", str(folder))
    assert "nothing to change" in run("plan", "--project", str(folder)).stdout
    again = run("init", str(folder), ok=False)
    assert again.returncode == 1 and "already holds a project" in again.stderr


def test_ingest_files_in_three_formats_then_features_and_training_set(small_project, tmp_path):
    now = time.time()
    rows = [
        {
            "event_id": f"o{i}",
            "user_id": f"u{i % 4}",
            "amount": float(i),
            "status": "paid",
            "ts": now - 3600 * 24 + i,
        }
        for i in range(300)
    ]
    jsonl = tmp_path / "orders.jsonl"
    lines = [json.dumps(r) for r in rows[:100]] + ["{broken", json.dumps({"user_id": "u1"})]
    jsonl.write_text("\n".join(lines) + "\n")
    csv = tmp_path / "orders.csv"
    pd.DataFrame(rows[100:200]).to_csv(csv, index=False)
    parquet = tmp_path / "orders.parquet"
    table = pa.Table.from_pylist(rows[200:])
    table = table.set_column(
        table.schema.get_field_index("ts"),
        "ts",
        pa.array(pd.to_datetime([r["ts"] for r in rows[200:]], unit="s", utc=True)),
    )
    pq.write_table(table, parquet)

    out = run("ingest", str(jsonl), "--stream", "orders", "--project", str(small_project))
    assert "100 accepted, 0 duplicates, 2 rejected" in out.stdout
    assert "line 101 is not valid JSON" in out.stderr
    assert (
        "100 accepted" in run("ingest", str(csv), "-s", "orders", "-p", str(small_project)).stdout
    )
    assert (
        "100 accepted"
        in run("ingest", str(parquet), "-s", "orders", "-p", str(small_project)).stdout
    )
    assert (
        "0 accepted, 100 duplicates"
        in run("ingest", str(parquet), "-s", "orders", "-p", str(small_project)).stdout
    )
    bad = run("ingest", str(csv), "-s", "nope", "-p", str(small_project), ok=False)
    assert bad.returncode == 1 and "unknown stream 'nope'" in bad.stderr

    assert "processed 300 events" in run("process", "-p", str(small_project)).stdout
    out = run("features", "user_id=u1", "-f", "spend_lifetime", "-p", str(small_project)).stdout
    assert str(float(sum(r["amount"] for r in rows if r["user_id"] == "u1"))) in out

    spine = tmp_path / "spine.csv"
    pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "timestamp": ["2000-01-01T00:00:00Z", pd.Timestamp.now(tz="UTC").isoformat()],
        }
    ).to_csv(spine, index=False)
    result = tmp_path / "train.parquet"
    run(
        "training-set",
        str(spine),
        "-f",
        "spend_lifetime,spend_1h",
        "-o",
        str(result),
        "-p",
        str(small_project),
    )
    got = pq.read_table(result).to_pylist()
    assert got[0]["spend_lifetime"] == 0.0
    assert got[1]["spend_lifetime"] == sum(r["amount"] for r in rows if r["user_id"] == "u2")
    with Project(small_project) as p:
        assert p.log.end_offset(DEAD_LETTER_STREAM) == 2


def test_a_time_option_that_is_no_time_is_a_usage_error(small_project, tmp_path):
    out = str(tmp_path / "scores.parquet")
    bad = run("score", "x", "--out", out, "--at", "garbage", "-p", str(small_project), ok=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--at" in bad.stderr and "cannot parse 'garbage' as a timestamp" in bad.stderr
    # epoch seconds are a time: this one gets past the option to the unknown service
    epoch = run(
        "score", "x", "--out", out, "--at", "1767225600", "-p", str(small_project), ok=False
    )
    assert epoch.returncode == 1 and "--at" not in epoch.stderr, epoch.stderr
