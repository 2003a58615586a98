"""``monitor``, ``experiment`` and ``report``: live predictions against their ground truth."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.table import Table

from headwater.cli.common import (
    EnvOpt,
    ProjectOpt,
    TeamOpt,
    app,
    check_team,
    console,
    fmt,
    iso,
    iso_day,
    open_project,
    print_segments,
    progress_bar,
)
from headwater.monitoring.ledger import DAY_US
from headwater.serving import log_format


@app.command()
def monitor(
    service: Annotated[str | None, typer.Argument(help="Only this service")] = None,
    days: Annotated[float, typer.Option(help="Window of prediction times, back from now")] = 30,
    webhook: Annotated[str | None, typer.Option(help="POST each alert as JSON here")] = None,
    act: Annotated[
        bool,
        typer.Option(
            "--act", help="Retrain models whose policy says so; promote challengers that win"
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole run as one JSON document")
    ] = False,
    team: TeamOpt = None,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Join logged predictions with their ground truth; drift against reference; alerts.

    The monitor's ledger consumes the log from its checkpoints first (a kill at any point
    resumes without counting anything twice), then the window is reported: per version, and
    per day from the ledger's daily aggregates. Alerts go to the `alerts` stream (and to
    --webhook); they are printed as a table at the end. --team: only that team's services
    (their alerts, and --act on their models only)."""
    log_format.configure(logging.WARNING)
    alert_log = logging.getLogger("headwater.monitor")
    alerts: list[dict[str, Any]] = []

    def send(alert: dict[str, Any]) -> None:
        alerts.append(alert)
        if webhook:
            try:
                httpx.post(webhook, json=alert, timeout=5)
            except httpx.HTTPError as exc:
                alert_log.error("webhook failed", extra={"error": str(exc)})

    with open_project(project, env) as p, progress_bar(quiet=as_json, transient=True) as bar:
        if team is not None:
            check_team(p, team)
        task = bar.add_task("monitor ledger", total=None)
        run = p.monitor(
            service,
            team=team,
            days=days,
            alert=send,
            act=act,
            progress=lambda d: bar.update(task, completed=d.consumed),
            log=(lambda _: None) if as_json else console.print,
        )
    if as_json:
        document = {
            "window_days": days,
            "ledger": dataclasses.asdict(run.ledger),
            "reports": [
                {**dataclasses.asdict(r), "label_coverage": r.label_coverage} for r in run.reports
            ],
            "daily": [dataclasses.asdict(row) for row in run.daily],
            "skew": run.skews,
            "actions": run.actions,
            "alerts": alerts,
        }
        print(orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode())
        return
    _print_run(run, days)
    _print_alerts(alerts)


def _print_run(run: Any, days: float) -> None:
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
            f"{len(skew['mismatches'])} mismatching values"
            + (f" (worst: {worst[0]} {worst[1]:.1%})" if skew["mismatches"] else "")
        )
    if not reports:
        console.print(f"no predictions in the last {days:g} days")
        return
    for r in reports:
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in r.metrics.items()) or "no labels yet"
        console.print(
            f"[bold]{r.service}[/bold] {r.variant} {r.model} v{r.version} "
            f"(owner {r.owner}), last {days:g} days: {r.predictions:,} predictions "
            f"({iso(r.first_us)} to {iso(r.last_us)}), label coverage "
            f"{r.label_coverage:.0%}; {metrics}",
            soft_wrap=True,
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
        print_segments(r.segments, f"{r.service} {r.variant} v{r.version}, live, labelled")
    by_day = Table("service/variant", "version", "day", "predictions", "labelled", "delay")
    columns: list[str] = sorted({m for row in daily for m in row.metrics})
    for metric in columns:
        by_day.add_column(metric)
    for row in daily:
        by_day.add_row(
            f"{row.service}/{row.variant}",
            f"{row.model} v{row.version}",
            "total" if row.day is None else iso_day(row.day * DAY_US),
            f"{row.predictions:,}",
            f"{row.label_coverage:.0%}",
            _delay(row.label_delay_s),
            *(fmt(row.metrics.get(metric)) for metric in columns),
        )
    console.print("performance by day of prediction (from the ledger):")
    console.print(by_day)


def _delay(seconds: float | None) -> str:
    """A label delay for people.

    >>> _delay(1_209_600.0), _delay(5400.0)
    ('14.0d', '1.5h')
    """
    if seconds is None:
        return "-"
    return f"{seconds / 86400:.1f}d" if seconds >= 2 * 86400 else f"{seconds / 3600:.1f}h"


def _print_alerts(alerts: list[dict[str, Any]]) -> None:
    if not alerts:
        console.print("no alerts")
        return
    table = Table(
        "kind",
        "level",
        "service",
        "version",
        "column",
        "reason",
        title=f"{len(alerts)} findings at warn or alert level (in the 'alerts' stream: "
        "`headwater alerts list`)",
    )
    shown = 30
    for a in alerts[:shown]:
        version = f"{a['model']} v{a['model_version']}" if "model" in a else "-"
        table.add_row(
            a.get("kind", "-"),
            a.get("level", "-"),
            a.get("service", "-"),
            version,
            a.get("column", a.get("feature", "-")),
            (a.get("reasons") or ["-"])[0],
        )
    console.print(table)
    if len(alerts) > shown:
        console.print(f"... and {len(alerts) - shown} more (all of them with --json)")


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
    evaluate: Annotated[
        str | None,
        typer.Option(
            help="Off-policy: the reward this policy would have earned on the logged traffic; "
            "a variant ('b') or probabilities ('a=0.2,b=0.8')"
        ),
    ] = None,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Per-variant outcomes with confidence intervals, the test used, and a verdict; with
    --evaluate POLICY, the off-policy estimate of what POLICY would have earned."""
    if evaluate is not None:
        _evaluate_policy(service, evaluate, days, project, env)
        return
    higher = None if lower_is_better is None else not lower_is_better
    with open_project(project, env) as p:
        stats, comparisons = p.experiment(service, days=days, higher_is_better=higher)
        allocated = p.allocation(service, days=days)
        by_segment = p.experiment_segments(service, days=days, higher_is_better=higher)
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
    if by_segment:
        table = Table("segment", "group", "n", "comparison", "difference", "p", "p (Holm)",
                      "verdict", title=f"by segment ({len(by_segment)} comparisons, "
                      "p-values adjusted for all of them)")  # fmt: skip
        for r in by_segment:
            table.add_row(
                r["segment"], r["group"], f"{r['n']:,}", f"{r['treatment']} vs {r['control']}",
                f"{r['difference']:+.4f}", f"{r['p_value']:.3g}", f"{r['p_adjusted']:.3g}",
                r["verdict"],
            )  # fmt: skip
        console.print(table)
    if not allocated.empty:
        shown = allocated.tail(30)
        table = Table("day", "variant", "version", "decisions", "share", "mean propensity",
                      title="allocation by day (UTC)")  # fmt: skip
        for row in shown.itertuples(index=False):
            table.add_row(
                iso_day(int(row.day) * 86_400_000_000),
                row.variant,
                f"v{row.model_version}",
                f"{row.decisions:,}",
                f"{row.share:.1%}",
                "-" if row.mean_propensity != row.mean_propensity else f"{row.mean_propensity:.3f}",
            )
        console.print(table)


@app.command()
def check(
    stream: Annotated[str | None, typer.Option(help="Only this stream's expectations")] = None,
    feature: Annotated[str | None, typer.Option(help="Only this feature's expectations")] = None,
    limit: Annotated[
        int, typer.Option(min=1, help="Latest events per stream partition to check")
    ] = 100_000,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Run the data tests now: every expectation declared on a stream (on its latest events)
    or a feature (on the current values of the entities they name). Failures go to the
    alerts stream with the owner (once a day each); the exit status is 1 if any failed."""
    with open_project(project, env) as p:
        results = p.check(stream=stream, feature=feature, limit=limit)
    if not results:
        console.print("no expectations declared" + (" there" if stream or feature else ""))
        return
    table = Table("on", "name", "column", "checks", "values", "result", "owner")
    for r in results:
        e = r.test.expectation
        checks = ", ".join(f"{k} {v}" for k, v in e.spec().items() if k != "column")
        broken = [f"{v.check} broken by {v.rows:,} (e.g. {_examples(v)})" for v in r.violations]
        verdict = "pass" if r.passed else "FAIL: " + "; ".join(broken)
        table.add_row(r.test.kind, r.test.name, e.column, checks, f"{r.checked:,}", verdict,
                      r.test.owner)  # fmt: skip
    console.print(table)
    failed = sum(not r.passed for r in results)
    console.print(f"{len(results) - failed} of {len(results)} expectations hold")
    if failed:
        raise typer.Exit(1)


def _examples(v: Any) -> str:
    return ", ".join(map(repr, v.examples)) or repr(v.observed)


def _evaluate_policy(
    service: str, policy: str, days: float, project: Path, env: str | None
) -> None:
    with open_project(project, env) as p:
        estimates, summary = p.evaluate_policy(service, policy, days=days)
    shares = ", ".join(f"{k} {v:.0%}" for k, v in sorted(summary["logged_share"].items()))
    console.print(
        f"logged: {estimates[0].n:,} rewarded decisions of {estimates[0].clusters:,} entities "
        f"({shares}), mean reward {summary['logged_mean']:.4f}"
        + (
            f"; {summary['without_propensity']:,} without a propensity left out"
            if summary["without_propensity"]
            else ""
        )
    )
    target = ", ".join(f"{k} {v:.0%}" for k, v in summary["policy"].items())
    table = Table("estimator", "mean reward", "95% interval (clustered by entity)",
                  "effective n", title=f"candidate policy: {target}")  # fmt: skip
    for e in estimates:
        table.add_row(
            {"ips": "inverse propensity", "snips": "self-normalized"}[e.estimator],
            f"{e.value:.4f}",
            f"[{e.ci_low:.4f}, {e.ci_high:.4f}]",
            f"{e.effective_n:,.0f}",
        )
    console.print(table)


@app.command()
def report(
    model: Annotated[str, typer.Argument(help="Model to report on")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file to write")] = None,
    days: Annotated[int, typer.Option(help="Days of predictions")] = 30,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Write a self-contained HTML report: live performance, drift, predictions vs reference."""
    with open_project(project, env) as p:
        page = p.report(model, days)
        reports = p.root / "reports"
        if p.environment.declared:
            reports /= p.environment.name
        target = out or reports / f"{model}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page)
    console.print(f"report written to {target}")
