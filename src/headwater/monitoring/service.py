"""One run of the monitor, as ``headwater monitor`` and ``Project.monitor`` both do it: the
ledger takes what the log holds, then each version is reported (performance, drift, skew),
alerts go out, and with ``act`` the loop retrains and promotes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headwater.monitoring import loop
from headwater.monitoring.context import MonitorContext
from headwater.monitoring.ledger import DAY_US, Ledger, Progress
from headwater.monitoring.monitor import Monitor, VersionReport
from headwater.monitoring.rollup import Performance

# The default window of prediction times: a 14-day label horizon and two weeks of matured
# predictions after it.
WINDOW_DAYS = 30


@dataclass
class MonitorRun:
    """What one run found: the ledger's progress, a report per (service, variant, version),
    the daily performance from the ledger, the skew of each service and the loop's actions."""

    ledger: Progress
    reports: list[VersionReport]
    daily: list[Performance]
    skews: dict[str, dict[str, Any]]
    actions: list[dict[str, Any]] = field(default_factory=list)


def run_monitor(
    ctx: MonitorContext,
    service: str | None = None,
    *,
    days: float = WINDOW_DAYS,
    alert: Callable[[dict[str, Any]], None] | None = None,
    act: bool = False,
    progress: Callable[[Progress], None] | None = None,
    log: Callable[[str], None] = lambda _: None,
    team: str | None = None,
) -> MonitorRun:
    """Monitor the predictions of the last ``days`` (of ``service``, of the services
    ``team`` owns, or of every service).

    ``alert`` receives each alert (they also go to the ``alerts`` stream); ``act`` retrains
    models whose ``RetrainPolicy`` says so and promotes challengers that win on live labels;
    ``progress`` follows the ledger's consumption; ``log`` receives the loop's decisions.
    With ``team``, alerts and actions concern that team's services and models only.
    """
    if service is not None:
        ctx.definitions.service(service)  # an unknown name: "did you mean"
    chosen: list[str | None] = [service]
    if team is not None:
        chosen = [n for n, s in sorted(ctx.definitions.services.items()) if s.owner == team]
        chosen = [n for n in chosen if service is None or n == service]
    now = ctx.clock()
    since = now - int(days * DAY_US)
    ledger = Ledger(ctx)
    done = ledger.advance(now, progress)
    watcher = Monitor(ctx, alert=alert)
    reports = [r for name in chosen for r in watcher.run(name, since_us=since)]
    daily = [row for name in chosen for row in ledger.performance(since, now + 1, name)]
    skews = {
        name: watcher.skew(name, since, now + 1, record=True)
        for name in sorted({r.service for r in reports})
    }
    actions = []
    if act:
        actions = [
            *loop.retrain_if_needed(ctx, reports, log),
            *loop.promote_winners(
                ctx,
                since,
                now + 1,
                log,
                None if team is None else {r.model for r in reports},
            ),
        ]
    return MonitorRun(done, reports, daily, skews, actions)


def monitor_every(
    ctx: MonitorContext,
    every: float,
    stop: threading.Event,
    record: Callable[[list[VersionReport], dict[str, dict[str, Any]]], None],
) -> None:
    """Run the monitor every ``every`` seconds until ``stop``, handing each run's reports and
    each service's skew (the continuous check: new predictions only, counted in the ledger)
    to ``record`` (a server exports them on /metrics); a failed run is logged, the next one
    still comes."""
    while not stop.wait(every):
        try:
            now = ctx.clock()
            watcher = Monitor(ctx)
            reports = watcher.run()
            since = now - int(WINDOW_DAYS * DAY_US)
            skews = {
                name: watcher.skew(name, since, now + 1, record=True)
                for name in sorted({r.service for r in reports})
            }
            record(reports, skews)
        except Exception:  # noqa: BLE001 - the server keeps serving; the failure is logged
            logging.getLogger("headwater.monitor").exception("monitor run failed")
