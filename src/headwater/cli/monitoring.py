"""``monitor``, ``experiment`` and ``report``: live predictions against their ground truth."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from headwater.cli.common import ProjectOpt, app, console, fmt, open_project, progress_bar
from headwater.definitions.types import from_micros
from headwater.monitoring.ledger import DAY_US
from headwater.serving import log_format


@app.command()
def monitor(
    service: Annotated[str | None, typer.Argument(help="Only this service")] = None,
    days: Annotated[float, typer.Option(help="Window of prediction times, back from now")] = 7,
    webhook: Annotated[str | None, typer.Option(help="POST each alert as JSON here")] = None,
    act: Annotated[
        bool,
        typer.Option(
            "--act", help="Retrain models whose policy says so; promote challengers that win"
        ),
    ] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Join logged predictions with their ground truth; drift against reference; alerts.

    The monitor's ledger consumes the log from its checkpoints first (a kill at any point
    resumes without counting anything twice), then the window is reported: per version, and
    per day from the ledger's daily aggregates."""
    log_format.configure(logging.WARNING)
    alert_log = logging.getLogger("headwater.monitor")

    def send(alert: dict[str, Any]) -> None:
        alert_log.warning("alert", extra=alert)
        if webhook:
            try:
                httpx.post(webhook, json=alert, timeout=5)
            except httpx.HTTPError as exc:
                alert_log.error("webhook failed", extra={"error": str(exc)})

    with open_project(project) as p, progress_bar() as bar:
        task = bar.add_task("monitor ledger", total=None)
        run = p.monitor(
            service,
            days=days,
            alert=send,
            act=act,
            progress=lambda d: bar.update(task, completed=d.consumed),
            log=console.print,
        )
    done, reports, daily, skews = run.ledger, run.reports, run.daily, run.skews
    console.print(
        f"ledger: {done.predictions:,} predictions, {done.feedback:,} feedback events and "
        f"{done.matured:,} matured labels consumed in {done.seconds:.2f}s "
        f"({done.per_second:,.0f}/s)"
    )
    for action in run.actions:
        console.print(f"action: {action}")
    for name, skew in skews.items():
        worst = max(skew["rates"].items(), key=lambda kv: kv[1], default=("-", 0.0))
        console.print(
            f"skew {name}: {skew['checked']} predictions recomputed offline, "
            f"{len(skew['mismatches'])} mismatching values (worst: {worst[0]} "
            f"{worst[1]:.1%})"
        )
    if not reports:
        console.print("no predictions in the window")
        return
    for r in reports:
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in r.metrics.items()) or "no labels yet"
        console.print(
            f"[bold]{r.service}[/bold] {r.variant} {r.model} v{r.version} "
            f"(owner {r.owner}): {r.predictions:,} predictions, label coverage "
            f"{r.label_coverage:.0%}; {metrics}"
        )
        table = Table("column", "level", "PSI", "KS p", "null rate", "reasons")
        for d in r.drift:
            table.add_row(
                d.name,
                d.level,
                fmt(d.psi),
                fmt(d.ks_pvalue),
                fmt(d.null_rate),
                "; ".join(d.reasons),
            )
        console.print(table)
    by_day = Table("service", "variant", "version", "day", "predictions", "labelled", "delay")
    columns: list[str] = sorted({m for row in daily for m in row.metrics})
    for metric in columns:
        by_day.add_column(metric)
    for row in daily:
        by_day.add_row(
            row.service,
            row.variant,
            f"{row.model} v{row.version}",
            "all days" if row.day is None else from_micros(row.day * DAY_US).date().isoformat(),
            f"{row.predictions:,}",
            f"{row.label_coverage:.0%}",
            "-" if row.label_delay_s is None else f"{row.label_delay_s / 3600:.1f}h",
            *(fmt(row.metrics.get(metric)) for metric in columns),
        )
    console.print("performance by day of prediction (from the ledger):")
    console.print(by_day)


@app.command()
def experiment(
    service: Annotated[str, typer.Argument(help="An A/B (or bandit) service")],
    days: Annotated[float, typer.Option(help="Window of prediction times, back from now")] = 30,
    lower_is_better: Annotated[
        bool | None,
        typer.Option(
            "--lower-is-better/--higher-is-better",
            help="Whether a low outcome is good (e.g. churn); default: the service's setting",
        ),
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Per-variant outcomes with confidence intervals, the test used, and a verdict."""
    higher = None if lower_is_better is None else not lower_is_better
    with open_project(project) as p:
        stats, comparisons = p.experiment(service, days=days, higher_is_better=higher)
    table = Table("variant", "n", "outcome mean", "95% interval")
    for v in stats:
        table.add_row(v.variant, f"{v.n:,}", f"{v.mean:.4f}", f"[{v.ci_low:.4f}, {v.ci_high:.4f}]")
    console.print(table)
    for c in comparisons:
        console.print(
            f"{c.treatment} vs {c.control}: difference {c.difference:+.4f} "
            f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}], p={c.p_value:.3g} ({c.test}) -> "
            f"[bold]{c.verdict}[/bold]"
        )


@app.command()
def report(
    model: Annotated[str, typer.Argument(help="Model to report on")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file to write")] = None,
    days: Annotated[int, typer.Option(help="Days of predictions")] = 14,
    project: ProjectOpt = Path("."),
) -> None:
    """Write a self-contained HTML report: live performance, drift, predictions vs reference."""
    with open_project(project) as p:
        page = p.report(model, days)
        target = out or p.root / f"{model}-report.html"
    target.write_text(page)
    console.print(f"report written to {target}")
