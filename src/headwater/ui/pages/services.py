"""Services and experiments: how each service routes between its variants, its traffic per
day, each variant's outcome with its interval and the test's verdict (A/B and bandit
services), and shadow variants compared with the answers they shadowed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from headwater.definitions.service import Service
from headwater.monitoring.experiment import ExperimentError, allocation, analyze
from headwater.monitoring.monitor import experiment_outcomes
from headwater.ui import reads
from headwater.ui.charts import interval_chart, line_chart
from headwater.ui.html import DAY_US, Safe, badge, day, esc, join, link, number, path, table
from headwater.ui.html import facts as html_facts
from headwater.ui.page import Drawn, NotFound, Page, Panel, panels

WINDOW_DAYS = 30


def services(page: Page) -> Drawn:
    s = page.sources
    frame = reads.predictions(s)
    ready = s.readiness() if s.readiness is not None else {}
    rows = []
    for name, service in sorted(s.definitions.services.items()):
        count = int((frame["service"] == name).sum()) if not frame.empty else 0
        state = ready.get(name)
        rows.append(
            [
                link(name, path("services", name)),
                service.owner,
                "–" if state is None else _ready_badge(state),
                service.routing,
                join(
                    Safe(
                        f"{esc(v.name)}: {link(v.model.name, path('models', v.model.name))} "
                        f"{badge(v.alias, 'alias')} "
                    )
                    for v in service.variants
                ),
                number(count),
            ]
        )
    head = ["Service", "Owner", "Ready", "Routing", "Variants", "Predictions"]
    return "Services", table(head, rows), []


def _ready_badge(state: dict[str, Any]) -> Safe:
    """Ready or not, and why not (a required service waits for its load)."""
    word = "ready" if state["ready"] else "not ready"
    label = word + (" (required)" if state.get("required") else "")
    reason = "" if state["ready"] else f" {esc(state.get('reason', ''))}"
    return Safe(f"{badge(label)}{reason}")


def service(page: Page, name: str) -> Drawn:
    found = page.sources.definitions.services.get(name)
    if found is None:
        raise NotFound(f"no service is named {name!r}")
    return name, panels(page, PANELS, found), [("Services", "/ui/services")]


def routing(page: Page, service: Service) -> Safe:
    s = page.sources
    total = sum(v.weight for v in service.variants) or 1.0
    ready = s.readiness() if s.readiness is not None else {}
    states = ready.get(service.name, {}).get("variants", {})
    rows = [
        [
            v.name,
            link(v.model.name, path("models", v.model.name)),
            badge(v.alias, "alias"),
            f"v{s.registry.alias(v.model.name, v.alias) or '–'}",
            f"{v.weight / total:.0%}" if service.routing == "ab" else _role(service, v.name),
            states.get(v.name, {}).get("status", "–"),
        ]
        for v in service.variants
    ]
    facts = [
        ("Owner", service.owner),
        ("Description", service.description),
        ("Routing", service.routing),
        (
            "Feedback",
            f"{service.feedback.stream.name}.{service.feedback.field}"
            if service.feedback
            else "the model's label",
        ),
        ("Trigger stream", service.trigger.name if service.trigger else "none (called by id)"),
    ]
    return join(
        [
            html_facts(facts),
            table(["Variant", "Model", "Alias", "Version now", "Traffic", "Loaded here"], rows),
        ]
    )


def _role(service: Service, variant: str) -> str:
    if service.routing == "shadow":
        return "answers" if variant == service.variants[0].name else "shadow (logged, not returned)"
    if service.routing == "bandit":
        return "allocated by the bandit"
    return "every request"


def traffic(page: Page, service: Service) -> Safe:
    logged = reads.predictions(page.sources)
    series = reads.traffic(logged, service.name)
    trimmed = {k: v[-60:] for k, v in series.items()}
    chart = line_chart(
        trimmed,
        caption=f"Predictions of {service.name} per day and variant (UTC), last 60 days",
        y_label="predictions",
    )
    if service.routing not in ("ab", "bandit") or logged.empty:
        return chart
    mine = allocation(logged[logged["service"] == service.name])
    shares: dict[str, list[tuple[str, float]]] = {}
    for row in mine.itertuples(index=False):
        when = day(int(row.day) * DAY_US)
        shares.setdefault(f"{row.variant} v{row.model_version}", []).append((when, row.share))
    allocated = line_chart(
        {k: v[-60:] for k, v in shares.items()},
        caption=f"Allocation: the share of {service.name}'s answers per day, by variant and "
        "model version (each decision is logged with its probability)",
        y_label="share",
    )
    return join([chart, allocated])


def experiment(page: Page, service: Service) -> Safe:
    if service.routing not in ("ab", "bandit") or len(service.variants) < 2:
        return Safe(
            f"<p>{esc(service.name)} routes by <b>{esc(service.routing)}</b>: no experiment runs. "
            'Declare two variants with <code>routing="ab"</code> (or a bandit) to compare them '
            "on live outcomes.</p>"
        )
    # read at each view: feedback changes the outcomes with no new prediction
    since = page.now - WINDOW_DAYS * DAY_US
    outcomes = experiment_outcomes(page.sources.monitor(), service.name, since, page.now + 1)
    if outcomes.empty or outcomes["variant"].nunique() < 2:
        return Safe("<p>Fewer than two variants have outcomes in the last 30 days yet.</p>")
    try:
        stats, comparisons = analyze(
            outcomes, higher_is_better=service.higher_is_better, cluster_col="entity"
        )
    except ExperimentError as exc:
        return Safe(f"<p>{esc(str(exc))}</p>")
    chart = interval_chart(
        [(f"{v.variant} (n={v.n:,})", v.mean, v.ci_low, v.ci_high) for v in stats],
        caption=f"Outcome per variant with its 95% interval ({stats[0].kind} outcomes, "
        f"{'higher' if service.higher_is_better else 'lower'} is better)",
        x_label="outcome",
    )
    rows = [
        [
            f"{c.treatment} vs {c.control}",
            f"{c.difference:+.4g}",
            f"[{c.ci_low:+.4g}, {c.ci_high:+.4g}]",
            f"{c.p_value:.3g}",
            c.test,
            badge(c.verdict),
        ]
        for c in comparisons
    ]
    head = ["Comparison", "Difference", "95% interval", "p", "Test", "Verdict"]
    return join([chart, table(head, rows)])


def shadows(page: Page, service: Service) -> Safe:
    frame = reads.predictions(page.sources)
    if frame.empty:
        return Safe("<p>No prediction logged yet.</p>")
    mine = frame[frame["service"] == service.name]
    shadow = mine[mine["shadow"].astype(bool)]
    if shadow.empty:
        return Safe("<p>No shadow variant has run: nothing to compare.</p>")
    answered = mine[~mine["shadow"].astype(bool)]
    rows = [
        _paired(answered, shadow[shadow["variant"] == v], v)
        for v in sorted(shadow["variant"].unique())
    ]
    head = [
        "Shadow variant",
        "Paired requests",
        "Mean |difference|",
        "Correlation",
        "Same side of 0.5",
    ]
    return table(
        head, rows, caption="Each shadow prediction against the answer of the same request"
    )


def _paired(answered: pd.DataFrame, shadow: pd.DataFrame, variant: str) -> list[Any]:
    def key(frame: pd.DataFrame) -> pd.Series:
        return frame["entity"].astype(str) + "@" + frame["ts_us"].astype(str)

    left = answered.assign(_k=key(answered)).drop_duplicates("_k").set_index("_k")["output"]
    right = shadow.assign(_k=key(shadow)).drop_duplicates("_k").set_index("_k")["output"]
    both = pd.concat([left.rename("a"), right.rename("b")], axis=1, join="inner").astype(float)
    if both.empty:
        return [variant, 0, "–", "–", "–"]
    diff = float(np.mean(np.abs(both["a"] - both["b"])))
    corr = float(both["a"].corr(both["b"])) if len(both) > 2 else float("nan")
    agree = float(((both["a"] >= 0.5) == (both["b"] >= 0.5)).mean())
    return [variant, number(len(both)), number(diff), number(corr), f"{agree:.1%}"]


PANELS = [
    Panel("Variants and routing", routing),
    Panel("Traffic", traffic),
    Panel("Experiment", experiment),
    Panel("Shadow comparisons", shadows),
]
