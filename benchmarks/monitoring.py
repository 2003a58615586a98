"""Monitoring: drift false-alarm and detection rates over windows, and monitor throughput.

On the shop simulation (the quickstart's), with the churn model trained on the period before
"now" and its stored reference profile:
  false alarms  windows of N rows drawn from the model's own period (the same process the
                reference was profiled on): the share of windows with at least one drift
                alert, and per column
  detection     windows drawn from the period after the simulator's drift (fewer visits, more
                failed payments, higher prices): the share of windows with an alert
  throughput    predictions logged through the serving path, then one monitor run joining
                them with their labels (the model's label, matured) plus drift: rows/s

    python benchmarks/monitoring.py [--users 1500] [--windows 200] [--rows 500]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fresh_dir  # noqa: E402

from headwater import Project  # noqa: E402
from headwater.monitoring.drift import profile_drift  # noqa: E402
from headwater.monitoring.monitor import Monitor  # noqa: E402

DAY = 86_400_000_000
FUTURE_DAYS = 21


class Clock:
    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


def pool(
    project: Project, signups: dict[str, int], start_us: int, end_us: int, rows: int, seed: int
):
    """Feature rows of random users at random whole days in [start, end) (users signed up by
    then, as the model's examples are), with the model's scores."""
    rng = np.random.default_rng(seed)
    days = np.arange(start_us // DAY + 1, end_us // DAY + 1) * DAY
    order = sorted(signups, key=signups.get)
    joined = np.array([signups[u] for u in order])
    days = days[np.searchsorted(joined, days) > 0]  # days on which someone had signed up
    times = rng.choice(days, rows)
    picks = [order[rng.integers(0, np.searchsorted(joined, t))] for t in times]
    spine = pd.DataFrame(
        {"user_id": picks, "timestamp": pd.to_datetime(times, unit="us", utc=True)}
    )
    scored = project.score("retention", spine)  # the batch path: features as of each time
    features = project.registry.version("churn", "champion")["signature"]["features"]
    table = project.training_set(spine, features)
    return table[features].reset_index(drop=True), scored["score"].to_numpy(dtype=float)


def rates(profile: dict, frame: pd.DataFrame, scores: np.ndarray, windows: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    any_alert = 0
    per_column: dict[str, int] = {}
    for _ in range(windows):
        idx = rng.choice(len(frame), n, replace=False)
        drift = profile_drift(profile, frame.iloc[idx], scores[idx])
        alerted = [d.name for d in drift if d.level == "alert"]
        any_alert += bool(alerted)
        for name in alerted:
            per_column[name] = per_column.get(name, 0) + 1
    return any_alert / windows, {k: v / windows for k, v in sorted(per_column.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--days", type=int, default=56)
    ap.add_argument("--windows", type=int, default=200)
    ap.add_argument("--rows", type=int, default=500, help="rows per window")
    ap.add_argument("--predictions", type=int, default=20_000)
    args = ap.parse_args()

    from headwater.examples.shop.simulator import simulate
    from headwater.quickstart import _split, prepare_folder

    folder = fresh_dir("monitoring") / "shop"
    prepare_folder(folder)
    now = 1_767_225_600_000_000  # 2026-01-01
    clock = Clock(now)
    t0 = time.perf_counter()
    with Project(folder, clock=clock) as p:
        p.apply()
        sim = simulate(
            users=args.users,
            days=args.days + FUTURE_DAYS,
            end=(now + FUTURE_DAYS * DAY) / 1e6,
            seed=7,
            drift=0.9,
        )
        past, later = _split(sim.events, now / 1e6)
        for name, events in past.items():
            p.ingest(name, events)
        p.process()
        p.promote("churn", p.train("churn").version)
        users = sorted({e["user_id"] for e in past["signups"]})
        signups = {e["user_id"]: int(e["ts"] * 1e6) for e in sim.events["signups"]}
        profile = p.registry.version("churn", "champion")["profile"]
        print(f"prepared in {time.perf_counter() - t0:.0f}s: {len(users)} users", flush=True)

        # the model's own period: what its reference profile describes
        model = p.model("churn")
        first = now - model.label.horizon_us - model.lookback_us
        last = now - model.label.horizon_us
        frame, scores = pool(p, signups, first, last, args.windows * 20, seed=1)
        calm, calm_cols = rates(profile, frame, scores, args.windows, args.rows, seed=2)

        # after the drift: deliver the future, then draw from its last week
        clock.now_us = now + FUTURE_DAYS * DAY
        for name, events in later.items():
            p.ingest(name, events)
        p.process()
        frame, scores = pool(
            p, signups, clock.now_us - 7 * DAY, clock.now_us, args.windows * 20, seed=3
        )
        drifted, drift_cols = rates(profile, frame, scores, args.windows, args.rows, seed=4)

        # throughput: predictions through the serving path at "now", labels matured later
        clock.now_us = now
        rows = [{"user_id": users[i % len(users)]} for i in range(args.predictions)]
        t1 = time.perf_counter()
        for i in range(0, len(rows), 500):
            p.serving.predict("retention", rows[i : i + 500], "benchmark")
        p.serving.logger.flush()
        serve_s = time.perf_counter() - t1
        clock.now_us = now + FUTURE_DAYS * DAY
        t2 = time.perf_counter()
        reports = Monitor(p).run("retention", since_us=now - DAY, until_us=now + 1, alert=False)
        monitor_s = time.perf_counter() - t2
        labelled = sum(r.labelled for r in reports)
        judged = sum(r.predictions for r in reports)  # with the batch-scored pools

    print(f"\nwindows of {args.rows} rows, {args.windows} windows each, thresholds as shipped")
    print("| windows | any drift alert | columns alerting (share of windows) |")
    print("| --- | --- | --- |")
    for name, rate, cols in (
        ("model's own period (false alarms)", calm, calm_cols),
        ("after the simulated drift (detection)", drifted, drift_cols),
    ):
        top = ", ".join(f"{k} {v:.0%}" for k, v in sorted(cols.items(), key=lambda kv: -kv[1]))
        print(f"| {name} | {rate:.1%} | {top[:300] or '-'} |")
    print(
        f"\nmonitor throughput: {judged:,} logged predictions ({labelled:,} with "
        f"matured labels) joined, scored and drift-checked in {monitor_s:.2f}s = "
        f"{judged / monitor_s:,.0f} predictions/s "
        f"(logging them through the serving path took {serve_s:.2f}s)"
    )


if __name__ == "__main__":
    main()
