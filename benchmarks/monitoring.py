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

The shop, the model, the pools of rows and the monitor's ledger are prepared once. Each of
``--runs`` runs draws other windows from the same pools, and logs its predictions at an instant
of its own (run r at r hours before "now"), so its monitor run joins only those. Figures are
printed as min / median / max over the runs.

    python benchmarks/monitoring.py [--users 1500] [--windows 200] [--rows 500] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Figures, add_runs_argument, fresh_dir  # noqa: E402

from headwater import Project  # noqa: E402
from headwater.monitoring.drift import profile_drift  # noqa: E402
from headwater.monitoring.monitor import Monitor  # noqa: E402

DAY = 86_400_000_000
HOUR = 3_600_000_000
NOW = 1_767_225_600_000_000  # 2026-01-01
FUTURE_DAYS = 21
CALM = "model's own period (false alarms)"
DRIFTED = "after the simulated drift (detection)"


class Clock:
    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


def pool(
    project: Project, signups: dict[str, int], start_us: int, end_us: int, rows: int, seed: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Feature rows of random users at random whole days in [start, end) (users signed up by
    then, as the model's examples are), with the model's scores."""
    rng = np.random.default_rng(seed)
    days = np.arange(start_us // DAY + 1, end_us // DAY + 1) * DAY
    order = sorted(signups, key=lambda user: signups[user])
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


def rates(
    profile: dict, frame: pd.DataFrame, scores: np.ndarray, windows: int, n: int, seed: int
) -> tuple[float, dict[str, int]]:
    """The share of ``windows`` random windows of ``n`` rows with a drift alert, and how many
    windows each column alerted in."""
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
    return any_alert / windows, per_column


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--days", type=int, default=56)
    ap.add_argument("--windows", type=int, default=200)
    ap.add_argument("--rows", type=int, default=500, help="rows per window")
    ap.add_argument("--predictions", type=int, default=20_000)
    add_runs_argument(ap)
    args = ap.parse_args()
    figures = Figures(args.runs)
    alerting: dict[str, dict[str, int]] = {CALM: {}, DRIFTED: {}}  # column alerts, every run

    from headwater.quickstart import prepare_folder

    folder = fresh_dir("monitoring") / "shop"
    prepare_folder(folder)
    clock = Clock(NOW)
    with Project(folder, clock=clock) as p:
        pools, users = prepare(p, clock, args)
        for run in figures.runs():
            for i, (name, (profile, frame, scores)) in enumerate(pools.items()):
                seed = 100 * i + run  # other windows each run, from the same pool
                rate, columns = rates(profile, frame, scores, args.windows, args.rows, seed)
                figures.add(f"{name}: windows with a drift alert", 100 * rate, "%")
                for column, count in columns.items():
                    alerting[name][column] = alerting[name].get(column, 0) + count
            # an instant of this run's own, and no pool's (theirs are whole days)
            throughput(p, clock, users, args.predictions, NOW - run * HOUR, figures)

    print(figures.report())
    print(f"\nwindows of {args.rows} rows, {args.windows} windows a run, thresholds as shipped")
    for name, counts in alerting.items():
        shares = sorted(
            ((n / (args.windows * args.runs), c) for c, n in counts.items()), reverse=True
        )
        top = ", ".join(f"{column} {share:.0%}" for share, column in shares)
        print(f"columns alerting, {name} (share of every run's windows): {top or '-'}")


def prepare(
    p: Project, clock: Clock, args: argparse.Namespace
) -> tuple[dict[str, tuple[dict, pd.DataFrame, np.ndarray]], list[str]]:
    """Set-up, once: the shop, its churn model, the pools of rows windows are drawn from, and
    the monitor's ledger caught up (so that each run's monitor joins its own predictions)."""
    from headwater.examples.shop.simulator import simulate
    from headwater.monitoring.ledger import Ledger
    from headwater.quickstart import _split

    t0 = time.perf_counter()
    p.apply()
    sim = simulate(
        users=args.users,
        days=args.days + FUTURE_DAYS,
        end=(NOW + FUTURE_DAYS * DAY) / 1e6,
        seed=7,
        drift=0.9,
    )
    past, later = _split(sim.events, NOW / 1e6)
    for name, events in past.items():
        p.ingest(name, events)
    p.process()
    p.promote("churn", p.train("churn").version)
    users = sorted({e["user_id"] for e in past["signups"]})
    signups = {e["user_id"]: int(e["ts"] * 1e6) for e in sim.events["signups"]}
    profile = p.registry.version("churn", "champion")["profile"]

    # the model's own period: what its reference profile describes
    model = p.model("churn")
    first = NOW - model.label.horizon_us - model.lookback_us
    last = NOW - model.label.horizon_us
    calm = pool(p, signups, first, last, args.windows * 20, seed=1)

    # after the drift: deliver the future, then draw from its last week
    clock.now_us = NOW + FUTURE_DAYS * DAY
    for name, events in later.items():
        p.ingest(name, events)
    p.process()
    drifted = pool(p, signups, clock.now_us - 7 * DAY, clock.now_us, args.windows * 20, seed=3)
    Ledger(p.monitor_context()).advance()
    print(f"prepared in {time.perf_counter() - t0:.0f}s: {len(users)} users", flush=True)
    return {CALM: (profile, *calm), DRIFTED: (profile, *drifted)}, users


def throughput(
    p: Project, clock: Clock, users: list[str], predictions: int, at_us: int, figures: Figures
) -> None:
    """Predictions through the serving path at ``at_us`` (each run its own instant), then one
    monitor run over them once their labels matured."""
    clock.now_us = at_us
    rows = [{"user_id": users[i % len(users)]} for i in range(predictions)]
    t1 = time.perf_counter()
    for i in range(0, len(rows), 500):
        p.serving.predict("retention", rows[i : i + 500], "benchmark")
    p.serving.logger.flush()
    serve_s = time.perf_counter() - t1
    clock.now_us = NOW + FUTURE_DAYS * DAY
    t2 = time.perf_counter()
    reports = Monitor(p.monitor_context()).run(
        "retention", since_us=at_us, until_us=at_us + 1, alert=False
    )
    monitor_s = time.perf_counter() - t2
    judged = sum(r.predictions for r in reports)
    labelled = sum(r.labelled for r in reports)
    print(
        f"  monitor: {judged:,} predictions ({labelled:,} with matured labels) in "
        f"{monitor_s:.2f}s; logging them {serve_s:.2f}s",
        flush=True,
    )
    figures.add(
        "monitor throughput (join labels, score, drift)", judged / monitor_s, "predictions/s"
    )
    figures.add("monitor run", monitor_s, "s")
    figures.add("monitor run: predictions judged", judged, "predictions")
    figures.add("monitor run: predictions with matured labels", labelled, "predictions")
    figures.add(f"logging {predictions:,} predictions through the serving path", serve_s, "s")


if __name__ == "__main__":
    main()
