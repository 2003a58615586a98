"""Point-in-time training sets: headwater vs Feast (file and duckdb offline stores).

Same data for both, generated here: a feature table (user_id, event_timestamp at second
resolution, six float64 and two int64 features, uniform over 90 days) and an entity table
(user_id, event_timestamp). Feast answers with a feature view of the 8 features and a 2-day
TTL; headwater reads the same rows as a stream of feature events and answers with `last`
features over a 2-day window (hop 1 s, so the window starts exactly 2 days back). Feast's
join includes a feature row stamped exactly at the entity time, headwater's window ends just
before t, so headwater is asked as of t + 1 µs. The data is generated and loaded into
headwater once: ingested through the log, archived, and sorted by key and time (the copy
headwater's archiver keeps; each step is timed and printed). Each of ``--runs`` runs then times
every system's join (a fresh Feast repo each run; headwater twice, with its sorted copy and
without it, the ASOF join alone) and compares the answers for every entity row: mismatching
values and dropped rows are counted. Figures are printed as min / median / max over the runs.

    python benchmarks/feast_pit.py --size S     # 1M feature rows / 10k users, 100k entity rows
    python benchmarks/feast_pit.py --size L     # 10M / 100k users, 1M entity rows

Feast is installed in its own virtual environment (benchmarks/.work/feast-venv), never as a
dependency of headwater.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, Figures, add_runs_argument, archive_and_sort, fresh_dir  # noqa: E402

SIZES = {"S": (1_000_000, 10_000, 100_000), "L": (10_000_000, 100_000, 1_000_000)}
FLOATS = [f"f{i}" for i in range(6)]
INTS = ["i0", "i1"]
START = pd.Timestamp("2026-01-01", tz="UTC")
FEAST_VENV = WORK / "feast-venv"

FEAST_RUN = """
import json, sys, time
from datetime import timedelta
from pathlib import Path

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64


def peak_mb():
    # VmHWM is this process's own peak; ru_maxrss would include the parent's (kept over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

repo, kind, features, spine, out = Path(sys.argv[1]), *sys.argv[2:6]
repo.mkdir(parents=True, exist_ok=True)
offline = "type: file" if kind == "file" else "type: duckdb"
(repo / "feature_store.yaml").write_text(
    "project: bench\\nregistry: registry.db\\nprovider: local\\n"
    f"online_store:\\n  type: sqlite\\n  path: online.db\\noffline_store:\\n  {offline}\\n"
    "entity_key_serialization_version: 3\\n"
)
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
source = FileSource(path=features, timestamp_field="event_timestamp")
names = %(names)r
schema = [Field(name=n, dtype=Float64 if n.startswith("f") else Int64) for n in names]
view = FeatureView(name="stats", entities=[user], ttl=timedelta(days=2), schema=schema,
                   source=source)
store = FeatureStore(repo_path=str(repo))
store.apply([user, view])
entity_df = pd.read_parquet(spine)
start = time.perf_counter()
result = store.get_historical_features(
    entity_df=entity_df, features=[f"stats:{n}" for n in names]).to_df()
seconds = time.perf_counter() - start
result.to_parquet(out)
print(json.dumps({"seconds": seconds, "rows": len(result), "rss_mb": peak_mb()}))
"""

HEADWATER_DEFINITIONS = """
from headwater import Entity, Feature, Stream, agg

user = Entity("user", keys="user_id", owner="bench", description="A user")
stats = Stream("stats", fields={"user_id": "int", %(fields)s "event_timestamp": "timestamp"},
               key="user_id", time="event_timestamp", required=%(names)r, owner="bench",
               description="Feature rows (the generator writes no nulls, and says so)")
features = [
    Feature(name, entity=user, stream=stats, aggregation=agg.last(name), windows=["2d"],
            hop="1s", owner="bench", description="Latest value within 2 days")
    for name in %(names)r
]
"""

HEADWATER_RUN = """
import json, sys, time
import pandas as pd
import pyarrow.parquet as pq
from headwater import Project


def peak_mb():
    # VmHWM is this process's own peak; ru_maxrss would include the parent's (kept over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

folder, spine_path, out, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
project = Project(folder)
if sys.argv[5] == "join":  # without the sorted copy of the history: the ASOF join alone
    from headwater.training.sets import TrainingSets

    project.training = TrainingSets.over(
        project.catalog, project.offline_store, project.archiver, project.definitions.streams,
        sorted_history=False,
    )
spine = pq.read_table(spine_path).to_pandas()
spine["timestamp"] = spine["event_timestamp"] + pd.Timedelta(microseconds=1)
start = time.perf_counter()
table = project.training_set(spine, [f"{n}_2d" for n in names], output="arrow")
seconds = time.perf_counter() - start
pq.write_table(table, out)
print(json.dumps({"seconds": seconds, "rows": table.num_rows, "rss_mb": peak_mb()}))
"""


def generate(rows: int, users: int, spine_rows: int, folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(2026)
    seconds = 90 * 86_400
    data = pd.DataFrame(
        {
            "user_id": rng.integers(0, users, rows, dtype=np.int64),
            "event_timestamp": START + pd.to_timedelta(rng.integers(0, seconds, rows), unit="s"),
        }
    )
    for name in FLOATS:
        data[name] = rng.normal(0, 1, rows)
    for name in INTS:
        data[name] = rng.integers(0, 1000, rows, dtype=np.int64)
    # One row per (user, second): otherwise "the latest row" is ambiguous for both systems.
    data = data.drop_duplicates(["user_id", "event_timestamp"]).reset_index(drop=True)
    spine = pd.DataFrame(
        {
            "user_id": rng.integers(0, users, spine_rows, dtype=np.int64),
            "event_timestamp": START
            + pd.to_timedelta(rng.integers(0, seconds, spine_rows), unit="s"),
            "row_id": np.arange(spine_rows, dtype=np.int64),
        }
    )
    features, spine_path = folder / "features.parquet", folder / "spine.parquet"
    data.to_parquet(features, index=False)
    spine.to_parquet(spine_path, index=False)
    return features, spine_path


class DidNotFinish(Exception):
    """A competitor's run went past the memory or time cap and was stopped."""


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def run_json(cmd: list[str], cap_mb: float | None = None, timeout_s: float | None = None) -> dict:
    """The JSON the command prints last; with caps, a run that goes past ``cap_mb`` of
    resident memory or ``timeout_s`` is killed and raises ``DidNotFinish`` (a store that
    would take the whole machine's memory must not take the benchmark, or the machine,
    down with it)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        began, peak = time.monotonic(), 0.0
        while proc.poll() is None:
            peak = max(peak, rss_mb(proc.pid))
            elapsed = time.monotonic() - began
            over = cap_mb is not None and peak > cap_mb
            if over or (timeout_s is not None and elapsed > timeout_s):
                proc.kill()
                proc.wait()
                why = f"{peak:,.0f} MB resident" if over else f"{elapsed:,.0f} s"
                raise DidNotFinish(f"stopped after {elapsed:,.0f} s at {why}")
            time.sleep(0.1)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed:\n{err.read()[-3000:]}")
        return json.loads(out.read().strip().splitlines()[-1])


def load_headwater(folder: Path, features: Path) -> dict[str, float]:
    from headwater import Project
    from headwater.definitions.types import to_micros

    names = FLOATS + INTS
    fields = " ".join(f'"{n}": "{"float" if n.startswith("f") else "int"}",' for n in names)
    (folder / "headwater.toml").write_text(
        '[project]\nname = "pit"\ndefinitions = ["definitions.py"]\n'
    )
    (folder / "definitions.py").write_text(
        textwrap.dedent(HEADWATER_DEFINITIONS % {"fields": fields, "names": names})
    )
    timings = {}
    end = to_micros(START + pd.Timedelta(days=91))
    with Project(folder, clock=lambda: end) as p:
        start = time.perf_counter()
        for batch in pq.ParquetFile(features).iter_batches(batch_size=200_000):
            p.ingest("stats", pa.Table.from_batches([batch]))
        timings["ingest"] = time.perf_counter() - start
        timings["archive"], timings["sort"] = archive_and_sort(p, "stats")
    copy = folder / ".headwater" / "offline" / "stream=stats" / "_sorted"
    timings["sorted_mb"] = sum(f.stat().st_size for f in copy.iterdir()) / 1e6
    return timings


def compare(spine: Path, feast_out: Path, ours_out: Path, suffix: str = "") -> tuple[int, int, int]:
    """(dropped rows, mismatching rows, values compared) over every entity row; ``suffix``
    ends the first answer's column names (``"_2d"`` where it is headwater's too)."""
    names = FLOATS + INTS
    base = pq.read_table(spine).to_pandas()
    feast = pd.read_parquet(feast_out).set_index("row_id")
    ours = pq.read_table(ours_out).to_pandas().set_index("row_id")
    dropped = len(set(base["row_id"]) - set(feast.index)) + len(
        set(base["row_id"]) - set(ours.index)
    )
    feast = feast.reindex(base["row_id"])
    ours = ours.reindex(base["row_id"])
    bad = np.zeros(len(base), dtype=bool)
    for n in names:
        a = pd.to_numeric(feast[f"{n}{suffix}"], errors="coerce").to_numpy(dtype=float)
        b = pd.to_numeric(ours[f"{n}_2d"], errors="coerce").to_numpy(dtype=float)
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        bad |= ~same
    return dropped, int(bad.sum()), len(base) * len(names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", choices=sorted(SIZES), default="S")
    ap.add_argument("--rows", type=int, help="override the feature rows (for smoke runs)")
    ap.add_argument("--stores", default="duckdb,file", help="Feast offline stores to run")
    ap.add_argument(
        "--feast-cap-gb",
        type=float,
        default=16.0,
        help="stop a Feast run past this much resident memory (it counts as not finished)",
    )
    ap.add_argument(
        "--feast-timeout-s", type=float, default=1800.0, help="stop a Feast run after this long"
    )
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the data and headwater project a finished set-up of the same size left in "
        "benchmarks/.work (set-up takes ~10 min at size L; only for the same code)",
    )
    add_runs_argument(ap)
    args = ap.parse_args()
    figures = Figures(args.runs)
    rows, users, spine_rows = SIZES[args.size]
    if args.rows:
        rows, users, spine_rows = args.rows, max(args.rows // 100, 10), max(args.rows // 10, 10)
    if not (FEAST_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(FEAST_VENV)], check=True)
        subprocess.run(
            [str(FEAST_VENV / "bin" / "pip"), "install", "-q", "feast[duckdb]"], check=True
        )
    print(
        f"size {args.size}: {rows:,} feature rows, {users:,} users, {spine_rows:,} entity rows",
        flush=True,
    )
    work = WORK / f"feast-{args.size}"
    ready = work / "ready.json"  # written once the set-up finished: what it was for
    wanted = {"rows": rows, "users": users, "spine_rows": spine_rows}
    features, spine, hw = work / "features.parquet", work / "spine.parquet", work / "headwater"
    done = json.loads(ready.read_text()) if args.reuse and ready.exists() else {}
    if done.get("data") == wanted and "sort" in done.get("load", {}):
        load, earlier = done["load"], " (an earlier invocation's, reused)"
    else:
        work = fresh_dir(f"feast-{args.size}")
        features, spine = generate(rows, users, spine_rows, work)
        hw.mkdir()
        load, earlier = load_headwater(hw, features), ""
        ready.write_text(json.dumps({"data": wanted, "load": load}))
    print(
        f"  headwater: ingest through the log {load['ingest']:.1f}s, archive "
        f"{load['archive']:.1f}s, sorted copy {load['sort']:.1f}s ({load['sorted_mb']:,.0f} MB)"
        f" (set-up, once: not part of the timed join){earlier}",
        flush=True,
    )
    script = work / "feast_run.py"
    script.write_text(FEAST_RUN % {"names": FLOATS + INTS})
    stores = args.stores.split(",")
    unfinished: dict[str, str] = {}
    for _ in figures.runs():
        ours_out, join_out = work / "headwater.parquet", work / "headwater-join.parquet"
        names = ",".join(FLOATS + INTS)
        for how, out in (("sorted", ours_out), ("join", join_out)):
            result = run_json(
                [sys.executable, "-c", HEADWATER_RUN, str(hw), str(spine), str(out), names, how]
            )
            record(figures, "headwater" if how == "sorted" else "headwater, join only", result)
        dropped, mismatched, _ = compare(spine, join_out, ours_out, "_2d")
        figures.add("headwater: rows where the join's answer differs", dropped + mismatched, "rows")
        for kind in stores:
            if kind in unfinished:  # it would not finish again on the same data
                continue
            repo, out = work / f"repo-{kind}", work / f"feast-{kind}.parquet"
            shutil.rmtree(repo, ignore_errors=True)  # a fresh registry and online store each run
            cmd = [str(FEAST_VENV / "bin" / "python"), str(script), str(repo), kind]
            try:
                result = run_json(
                    [*cmd, str(features), str(spine), str(out)],
                    cap_mb=args.feast_cap_gb * 1024,
                    timeout_s=args.feast_timeout_s,
                )
            except DidNotFinish as exc:
                unfinished[kind] = str(exc)
                print(f"  feast {kind}: did not finish: {exc}", flush=True)
                continue
            dropped, mismatched, _ = compare(spine, out, ours_out)
            result.update(dropped=dropped, mismatched_rows=mismatched)
            record(figures, f"feast {kind}", result)
            figures.add(f"feast {kind}: entity rows missing from either answer", dropped, "rows")
            figures.add(f"feast {kind}: rows with a differing value", mismatched, "rows")

    for kind in stores:
        if kind in unfinished:
            print(
                f"feast {kind}: did not finish ({unfinished[kind]}; caps --feast-cap-gb "
                f"{args.feast_cap_gb:g}, --feast-timeout-s {args.feast_timeout_s:g})"
            )
            continue
        figures.compare(
            f"headwater speed-up over feast {kind} (its seconds / headwater's)",
            f"feast {kind}: training set",
            "headwater: training set",
        )
        figures.compare(
            f"headwater, join only: speed-up over feast {kind}",
            f"feast {kind}: training set",
            "headwater, join only: training set",
        )
    print(figures.report())


def record(figures: Figures, system: str, result: dict) -> None:
    print(f"  {system}: {result}", flush=True)
    figures.add(f"{system}: training set", result["seconds"], "s")
    figures.add(f"{system}: peak RSS", result["rss_mb"], "MB")
    figures.add(f"{system}: rows returned", int(result["rows"]), "rows")


if __name__ == "__main__":
    main()
