"""Monitoring: per model, the live metric by day and version (from the monitor's ledger),
drift per feature by day (PSI against the alert line), predictions against the reference
profile, and the alerts with their reasons and owners (acknowledged where the key allows)."""

from __future__ import annotations

from typing import Any

import numpy as np

from headwater.definitions import Model
from headwater.monitoring.ledger import Ledger
from headwater.monitoring.monitor import Monitor, VersionReport
from headwater.ui import reads
from headwater.ui.charts import bar_chart, hbar_chart, line_chart
from headwater.ui.html import DAY_US, Safe, badge, day, esc, join, link, number, path, table
from headwater.ui.page import DIALOG, Drawn, NotFound, Page, Panel, panels
from headwater.ui.pages.common import alert_rows, level_badge

DAYS = 30
TOP_COLUMNS = 6


def monitoring(page: Page) -> Drawn:
    s = page.sources
    alerts = s.alerts.list()
    rows = []
    for name, model in sorted(s.definitions.models.items()):
        perf = [p for p in _performance(page) if p.model == name and p.day is None]
        open_alerts = sum(1 for a in alerts if a.body.get("model") == name and not a.ack)
        metric = model.promotion.metric
        rows.append(
            [
                link(name, path("monitoring", name)),
                model.owner,
                ", ".join(f"v{p.version} ({p.service}/{p.variant})" for p in perf) or "not served",
                number(sum(p.predictions for p in perf)),
                number(sum(p.labelled for p in perf)),
                ", ".join(f"v{p.version} {number(p.metrics.get(metric))}" for p in perf) or "–",
                badge(f"{open_alerts}", "alert") if open_alerts else "0",
            ]
        )
    head = [
        "Model",
        "Owner",
        "Served versions",
        "Predictions",
        "Labelled",
        "Live metric",
        "Open alerts",
    ]
    listed = table(head, rows, caption=f"The last {DAYS} days")
    every = sorted(alerts, key=lambda a: -a.at_us)[:50]
    alert_table = table(
        ["When", "Level", "Model", "What", "Why", "Owner", ""],
        alert_rows(page, every),
        caption=f"The {len(every)} latest of {len(alerts):,} alerts",
    )
    body = join([listed, Safe('<h2 id="h-alerts">Alerts</h2>'), alert_table, DIALOG])
    return "Monitoring", body, []


def monitored(page: Page, name: str) -> Drawn:
    found = page.sources.definitions.models.get(name)
    if found is None:
        raise NotFound(f"no model is named {name!r}")
    body = join([panels(page, PANELS, found), DIALOG])
    return f"Monitoring {name}", body, [("Monitoring", "/ui/monitoring")]


def _key(page: Page) -> tuple[Any, ...]:
    return (reads.offsets(page.sources.log, "predictions"), page.now // DAY_US)


def _performance(page: Page) -> list[Any]:
    """From the monitor's ledger at each view (labels mature there with no new prediction,
    so no log offset could key a cache of it; the read takes tens of milliseconds)."""
    s = page.sources
    return Ledger(s.monitor()).performance(page.now - DAYS * DAY_US, page.now + 1)


def live(page: Page, model: Model) -> Safe:
    metric = model.promotion.metric
    series: dict[str, list[tuple[str, float | None]]] = {}
    for p in _performance(page):
        if p.model == model.name and p.day is not None:
            value = p.metrics.get(metric)
            label = f"v{p.version} ({p.variant})"
            series.setdefault(label, []).append(
                (day(p.day * DAY_US), None if value is None or np.isnan(value) else float(value))
            )
    shown = {k: v for k, v in series.items() if any(x is not None for _, x in v)}
    if not shown:
        return Safe(
            f"<p>No labelled prediction of {esc(model.name)} in the last {DAYS} days yet: the "
            f"live {esc(metric)} appears once the ground truth of its predictions matures.</p>"
        )
    return line_chart(
        shown,
        caption=f"Live {metric} per day of prediction (labelled predictions only), per version",
        y_label=metric,
    )


def _daily(page: Page, model: Model) -> list[tuple[str, VersionReport]]:
    """The monitor's reports of each day with predictions (read-only: no alert is raised)."""
    s = page.sources

    def compute() -> list[tuple[str, VersionReport]]:
        ctx = s.monitor()
        frame = reads.predictions(s)
        if frame.empty:
            return []
        since = page.now - page.now % DAY_US - DAYS * DAY_US
        mine = frame[(frame["model"] == model.name) & (frame["ts_us"] >= since)]
        days = sorted({int(t) // DAY_US for t in mine["ts_us"]})
        monitor = Monitor(ctx)
        out = []
        for d in days:
            start = d * DAY_US
            window = mine[(mine["ts_us"] >= start) & (mine["ts_us"] < start + DAY_US)]
            for report in monitor.run(
                None, since_us=start, until_us=start + DAY_US, logged=window, alert=False
            ):
                if report.model == model.name:
                    out.append((day(start), report))
        return out

    return s.memo.get(("daily-drift", model.name), _key(page), compute)


def drift(page: Page, model: Model) -> Safe:
    daily = _daily(page, model)
    if not daily:
        return Safe(f"<p>No prediction of {esc(model.name)} in the last {DAYS} days.</p>")
    last = daily[-1][1]  # the version served last: one point per day of it
    psi: dict[str, list[tuple[str, float | None]]] = {}
    for label, report in daily:
        if (report.version, report.variant) != (last.version, last.variant):
            continue
        for column in report.drift:
            if column.psi is not None:
                psi.setdefault(column.name, []).append((label, float(column.psi)))
    top = sorted(psi, key=lambda c: -max(v or 0 for _, v in psi[c]))[:TOP_COLUMNS]
    threshold = Monitor(page.sources.monitor()).thresholds.psi_alert
    chart = line_chart(
        {c: psi[c] for c in top},
        caption=f"v{last.version}: PSI per day against its training reference, the {len(top)} "
        "columns that drifted most (dashed: the alert line)",
        y_label="PSI",
        threshold=threshold,
        threshold_label="PSI alert line",
    )
    last_label = daily[-1][0]
    bars = hbar_chart(
        sorted(
            ((d.name, float(d.psi)) for d in last.drift if d.psi is not None), key=lambda x: -x[1]
        ),
        caption=f"PSI of every column on {last_label} (v{last.version})",
        x_label="PSI",
        threshold=threshold,
        threshold_label="PSI alert line",
    )
    rows = [
        [
            d.name,
            level_badge(d.level),
            number(d.psi),
            number(d.ks_statistic),
            number(d.null_rate),
            "; ".join(d.reasons),
        ]
        for d in sorted(last.drift, key=lambda d: -(d.psi or 0))
    ]
    details = table(["Column", "Level", "PSI", "KS", "Null rate", "Why"], rows)
    return join(
        [
            chart,
            bars,
            Safe("<details><summary>Every column's statistics</summary>"),
            details,
            Safe("</details>"),
        ]
    )


def predictions(page: Page, model: Model) -> Safe:
    s = page.sources
    frame = reads.predictions(s)
    if frame.empty:
        return Safe("<p>No prediction logged yet.</p>")
    mine = frame[(frame["model"] == model.name) & ~frame["shadow"].astype(bool)]
    mine = mine[mine["ts_us"] >= page.now - DAYS * DAY_US]
    if mine.empty:
        return Safe(f"<p>No prediction of {esc(model.name)} in the last {DAYS} days.</p>")
    version = int(mine["model_version"].iloc[-1])
    reference = s.registry.version(model.name, version).get("profile", {}).get("prediction", {})
    edges = reference.get("edges")
    if not edges or len(edges) < 2:
        return Safe("<p>The version has no reference profile of its predictions.</p>")
    live = mine[mine["model_version"] == version]["output"].astype(float).to_numpy()
    counts, _ = np.histogram(np.clip(live, edges[0], edges[-1]), edges)
    labels = [f"{edges[i]:.2f}–{edges[i + 1]:.2f}" for i in range(len(edges) - 1)]
    return bar_chart(
        {
            "reference (held-out rows)": [float(x) for x in reference["shares"]],
            f"live (last {DAYS} days)": [float(x) for x in counts / max(counts.sum(), 1)],
        },
        labels,
        caption=f"v{version}: share of predictions per bin of the reference (deciles of its "
        f"held-out predictions); {len(live):,} live predictions",
        y_label="share",
    )


def model_alerts(page: Page, model: Model) -> Safe:
    found = [a for a in page.sources.alerts.list() if a.body.get("model") == model.name]
    latest = sorted(found, key=lambda a: -a.at_us)[:50]
    return table(
        ["When", "Level", "Model", "What", "Why", "Owner", ""],
        alert_rows(page, latest),
        caption=f"{sum(1 for a in found if not a.ack):,} open of {len(found):,}",
    )


PANELS = [
    Panel("Live performance", live),
    Panel("Drift per feature", drift),
    Panel("Predictions against the reference", predictions),
    Panel("Alerts", model_alerts),
]
