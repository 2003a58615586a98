"""``headwater report MODEL``: one self-contained HTML file (inline SVG, no scripts) with the
model's live performance over time, drift per feature, and predictions against the reference."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from headwater.definitions.types import from_micros, iso
from headwater.monitoring.context import MonitorContext
from headwater.monitoring.experiment import ExperimentError, analyze
from headwater.monitoring.monitor import (
    Monitor,
    VersionReport,
    experiment_outcomes,
    logged_predictions,
)

DAY = 86_400_000_000
STYLE = """body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:60rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}table{border-collapse:collapse}
td,th{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left}
.alert{color:#b00020;font-weight:600}.warn{color:#a35f00}.ok{color:#2e7d32}"""


def bars(
    values: list[tuple[str, float]],
    width: int = 560,
    color: str = "#4a6fa5",
    limit: float | None = None,
) -> str:
    """A horizontal bar chart as inline SVG; ``limit`` draws a threshold line."""
    if not values:
        return "<p>no data</p>"
    top = max([v for _, v in values] + [limit or 0.0]) or 1.0
    row, label_w = 22, 190
    parts = [f'<svg width="{width}" height="{row * len(values) + 10}" role="img">']
    for i, (label, value) in enumerate(values):
        w = (width - label_w - 60) * value / top
        y = i * row + 4
        parts.append(
            f'<text x="0" y="{y + 14}" font-size="12">{html.escape(label)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="16" fill="{color}"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" font-size="11">'
            f"{value:.3g}</text>"
        )
    if limit is not None:
        x = label_w + (width - label_w - 60) * limit / top
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{row * len(values) + 6}" '
            'stroke="#b00020" stroke-dasharray="4"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _daily(
    monitor: Monitor, model: str, days: int, now: int, logged: pd.DataFrame
) -> list[tuple[str, VersionReport]]:
    """Per calendar day (UTC) of prediction, as the monitor's ledger counts them."""
    out = []
    today = now - now % DAY
    for d in range(days, -1, -1):
        since = today - d * DAY
        until = min(since + DAY, now + 1)
        for r in monitor.run(None, since_us=since, until_us=until, logged=logged, alert=False):
            if r.model == model:
                out.append((from_micros(since).date().isoformat(), r))
    return out


def render(ctx: MonitorContext, model: str, days: int = 30) -> str:
    definition = ctx.definitions.model(model)
    monitor = Monitor(ctx)
    now = ctx.clock()
    # The predictions stream is read once; every window below is a slice of it. A report
    # only looks: it raises no alerts.
    logged = logged_predictions(ctx, None, now - days * DAY, now + 1)
    daily = _daily(monitor, model, days, now, logged)
    latest = monitor.run(None, since_us=now - days * DAY, logged=logged, alert=False)
    latest = [r for r in latest if r.model == model]
    metric = definition.promotion.metric
    sections = [
        f"<h1>{html.escape(model)}: {html.escape(definition.description)}</h1>",
        f"<p>owner {html.escape(definition.owner)} · generated {iso(now)} · window {days} days</p>",
    ]
    perf = [
        (f"{day} v{r.version} {r.variant}", r.metrics[metric])
        for day, r in daily
        if metric in r.metrics and not np.isnan(r.metrics[metric])
    ]
    sections += [f"<h2>Live {metric} by day (labelled predictions only)</h2>", bars(perf)]
    for r in latest:
        sections.append(
            f"<h2>Drift of v{r.version} ({html.escape(r.service)} / "
            f"{html.escape(r.variant)}), {r.predictions:,} predictions, label "
            f"coverage {r.label_coverage:.0%}</h2>"
        )
        psi = [(d.name, d.psi) for d in r.drift if d.psi is not None]
        sections.append(bars(psi, color="#7a5195", limit=monitor.thresholds.psi_alert))
        rows = "".join(
            f'<tr><td>{html.escape(d.name)}</td><td class="{d.level}">{d.level}</td>'
            f"<td>{html.escape('; '.join(d.reasons))}</td></tr>"
            for d in r.drift
        )
        sections.append(f"<table><tr><th>column</th><th>level</th><th>why</th></tr>{rows}</table>")
        sections.append(_prediction_chart(ctx, model, r, logged))
        sections += _segments(r)
    if not latest:
        sections.append("<p>No predictions of this model in the window.</p>")
    sections += _experiments(ctx, model, now - days * DAY, now + 1)
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(model)}"
        f" report</title><style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )


def intervals(rows: list[tuple[str, float, float, float]], width: int = 560) -> str:
    """Means with confidence intervals as inline SVG: one line per (label, mean, low, high)."""
    if not rows:
        return "<p>no data</p>"
    lo = min(r[2] for r in rows)
    hi = max(r[3] for r in rows)
    span = (hi - lo) or 1.0
    row, label_w, pad = 24, 190, 60
    scale = (width - label_w - pad) / span

    def x(v: float) -> float:
        return label_w + (v - lo) * scale

    parts = [f'<svg width="{width}" height="{row * len(rows) + 10}" role="img">']
    for i, (label, mean, low, high) in enumerate(rows):
        y = i * row + 12
        parts.append(
            f'<text x="0" y="{y + 4}" font-size="12">{html.escape(label)}</text>'
            f'<line x1="{x(low):.1f}" x2="{x(high):.1f}" y1="{y}" y2="{y}" stroke="#4a6fa5" '
            'stroke-width="3"/>'
            f'<circle cx="{x(mean):.1f}" cy="{y}" r="4" fill="#222"/>'
            f'<text x="{x(high) + 6:.1f}" y="{y + 4}" font-size="11">{mean:.4g} '
            f"[{low:.4g}, {high:.4g}]</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _segments(r: VersionReport) -> list[str]:
    """Each segment's groups on the labelled predictions, and the largest gap."""
    out = []
    for name, seg in r.segments.items():
        metric, gap = seg["metric"], seg["gap"]
        rows = "".join(
            f"<tr><td>{html.escape(group)}</td><td>{g['rows']:,}</td>"
            f"<td>{'-' if g.get(metric) is None else format(g[metric], '.4f')}</td>"
            f"<td>{g['positive_rate']:.3f}</td><td>{g['predicted_rate']:.3f}</td>"
            f"<td>{g['calibration']:+.3f}</td></tr>"
            for group, g in seg["groups"].items()
        )
        out.append(
            f"<h2>Segment {html.escape(name)} of v{r.version} (labelled predictions)</h2>"
            f"<table><tr><th>group</th><th>rows</th><th>{html.escape(metric)}</th>"
            "<th>positive rate</th><th>predicted</th><th>calibration</th></tr>"
            f"{rows}</table>"
        )
        if gap:
            low, high = (html.escape(g) for g in gap["between"])
            out.append(
                f"<p>Largest gap in {html.escape(metric)}: <b>{gap['value']:.4f}</b> "
                f"({low} vs {high}; groups under {seg['min_rows']} rows left out).</p>"
            )
    return out


def _experiments(ctx: MonitorContext, model: str, since: int, until: int) -> list[str]:
    """Each A/B or bandit service of the model: per-variant outcomes, the test, the verdict."""
    out: list[str] = []
    for service in ctx.definitions.services.values():
        if service.routing not in ("ab", "bandit"):
            continue
        if not any(v.model.name == model for v in service.variants):
            continue
        outcomes = experiment_outcomes(ctx, service.name, since, until)
        source = "feedback" if service.feedback is not None else "the model's label"
        out.append(f"<h2>Experiment: {html.escape(service.name)} ({service.routing})</h2>")
        if outcomes["variant"].nunique() < 2:
            out.append(
                f"<p>Fewer than two variants have outcomes ({source}) in the window yet.</p>"
            )
            continue
        try:
            stats, comparisons = analyze(
                outcomes, higher_is_better=service.higher_is_better, cluster_col="entity"
            )
        except ExperimentError as exc:
            out.append(f"<p>{html.escape(str(exc))}</p>")
            continue
        better = "higher" if service.higher_is_better else "lower"
        out.append(
            f"<p>Outcome: {source}; {better} is better; 95% intervals "
            f"({html.escape(stats[0].kind)} outcomes).</p>"
        )
        out.append(
            intervals([(f"{v.variant} (n={v.n:,})", v.mean, v.ci_low, v.ci_high) for v in stats])
        )
        rows = "".join(
            f"<tr><td>{html.escape(c.treatment)} vs {html.escape(c.control)}</td>"
            f"<td>{c.difference:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]</td>"
            f"<td>{c.p_value:.3g}</td><td>{html.escape(c.test)}</td>"
            f"<td><b>{html.escape(c.verdict)}</b></td></tr>"
            for c in comparisons
        )
        out.append(
            "<table><tr><th>comparison</th><th>difference</th><th>p</th><th>test</th>"
            f"<th>verdict</th></tr>{rows}</table>"
        )
    return out


def _prediction_chart(
    ctx: MonitorContext, model: str, report: VersionReport, logged: pd.DataFrame
) -> str:
    reference = ctx.registry.version(model, report.version)["profile"]["prediction"]
    edges = reference.get("edges")
    if not edges or len(edges) < 2:
        return ""
    frame = logged[
        (logged["service"] == report.service)
        & (logged["model"] == model)
        & (logged["model_version"] == report.version)
        & ~logged["shadow"].astype(bool)
    ]
    counts, _ = np.histogram(np.clip(frame["output"].astype(float), edges[0], edges[-1]), edges)
    live = counts / max(counts.sum(), 1)
    pairs = []
    for i, share in enumerate(reference["shares"]):
        label = f"{edges[i]:.2f}-{edges[i + 1]:.2f}"
        pairs += [(f"{label} reference", share), (f"{label} live", float(live[i]))]
    return "<h2>Predictions: live vs reference (shares per reference decile)</h2>" + bars(pairs)
