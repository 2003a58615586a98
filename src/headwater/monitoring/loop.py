"""Closing the loop: retrain on a drift alert or a weak live metric, then let the challenger
earn its promotion on live labels.

A retrained version is pointed to by the "challenger" alias (a shadow service scores it on
every request without answering). On a later run, once labels of the same requests have
matured, the challenger is promoted only if it beats the champion on those requests by the
model's promotion policy. Every step is recorded in the alias history with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from headwater.monitoring.context import MonitorContext
from headwater.monitoring.monitor import (
    Monitor,
    VersionReport,
    logged_predictions,
    logged_values,
)
from headwater.training import evaluation


def retrain_if_needed(
    ctx: MonitorContext, reports: list[VersionReport], log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Train a challenger for each model whose champion drifted or underperforms."""
    actions = []
    for report in reports:
        model = ctx.definitions.model(report.model)
        policy = model.retrain
        if policy is None or ctx.registry.alias(model.name, "champion") != report.version:
            continue
        reasons = []
        drifted = [d for d in report.drift if d.level == "alert"]
        if policy.on_drift and drifted:
            # The first reason of each column (its largest measure), e.g. "PSI 0.65 > 0.25":
            # the full statistics are in the alerts stream.
            reasons.append(
                f"drift in {len(drifted)} of {len(report.drift)} columns: "
                + ", ".join(f"{d.name} ({d.reasons[0]})" for d in drifted[:3])
                + (f" and {len(drifted) - 3} more" if len(drifted) > 3 else "")
            )
        if report.labelled >= policy.min_labelled:
            reasons += [
                f"live {metric} {report.metrics[metric]:.4f} < {floor}"
                for metric, floor in policy.below
                if report.metrics.get(metric, math.inf) < floor
            ]
        if not reasons or _challenger_since(ctx, model.name, report.first_us):
            continue
        log(f"retraining {model.name}: {reasons[0]}" + (" ..." if len(reasons) > 1 else ""))
        version = ctx.train(model.name)
        ctx.registry.promote(
            model,
            version,
            "challenger",
            "monitor",
            "retrained: " + "; ".join(reasons)[:500],
            ctx.clock(),
        )
        actions.append(
            {"action": "retrained", "model": model.name, "version": version, "reasons": reasons}
        )
    return actions


def _challenger_since(ctx: MonitorContext, model: str, since_us: int) -> bool:
    """Whether a challenger was already set after the window that raised the trigger began."""
    doc = ctx.registry.aliases(model).get("challenger")
    return bool(doc and doc["history"][-1]["at_us"] >= since_us)


def promote_winners(
    ctx: MonitorContext,
    since_us: int,
    until_us: int,
    log: Callable[[str], None],
    models: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Promote a challenger that beat its champion on the same live, labelled requests (of
    ``models`` only, when given)."""
    frame = logged_predictions(ctx, None, since_us, until_us)
    actions: list[dict[str, Any]] = []
    if frame.empty:
        return actions
    monitor = Monitor(ctx)
    for name, model in sorted(ctx.definitions.models.items()):
        if models is not None and name not in models:
            continue
        champion = ctx.registry.alias(name, "champion")
        challenger = ctx.registry.alias(name, "challenger")
        if model.retrain is None or challenger is None or challenger == champion:
            continue
        rows = frame[frame["model"] == name].reset_index(drop=True)
        if rows.empty:
            continue
        labels = monitor.ground_truth(model, rows, ctx.clock())
        labelled = rows[labels.notna().to_numpy()].assign(label=labels[labels.notna()].values)
        # The same requests scored by both: the shadow records share entity and time.
        labelled = labelled.assign(
            _request=labelled["entity"].map(str) + "@" + labelled["ts_us"].astype(str)
        )
        champ = labelled[labelled["model_version"] == champion].set_index("_request")
        chall = labelled[labelled["model_version"] == challenger].set_index("_request")
        both = champ.index.intersection(chall.index)
        if len(both) < model.retrain.min_labelled:
            continue
        y = champ.loc[both, "label"].astype(float).to_numpy()
        metric = model.promotion.metric

        old, new = (
            _live_metric(model, metric, y, records.loc[both, "output"])
            for records in (champ, chall)
        )
        sign = 1 if model.promotion.higher_is_better else -1
        won = sign * (new - old) > 0
        verdict = (
            f"live {metric} {new:.4f} vs champion v{champion} {old:.4f} on "
            f"{len(both)} labelled requests"
        )
        limit = model.promotion.max_segment_gap
        if won and limit is not None:
            segments = {s.name: s for s in model.segments}
            for service in ctx.definitions.services.values():
                if any(v.model.name == name for v in service.variants):
                    segments.update({s.name: s for s in service.segments})
            gaps = evaluation.by_segment(
                list(segments.values()),
                {n: logged_values(chall.loc[both], n) for n in segments},
                y,
                chall.loc[both, "output"].to_numpy(dtype=float),
                model.task,
                metric,
                model.k,
            )
            wide = [
                (n, g["gap"]) for n, g in gaps.items() if g["gap"] and g["gap"]["value"] > limit
            ]
            if wide:
                seg, gap = wide[0]
                won = False
                verdict += (
                    f"; but its live {metric} differs by {gap['value']:.4f} between groups "
                    f"{' and '.join(gap['between'])} of segment {seg} (the policy allows {limit})"
                )
        log(f"{name} challenger v{challenger}: {verdict} -> {'promote' if won else 'keep'}")
        if won:
            ctx.registry.promote(
                model,
                challenger,
                "champion",
                "monitor",
                "won on live labels: " + verdict,
                ctx.clock(),
                force=True,
            )
        actions.append(
            {
                "action": "promoted" if won else "kept",
                "model": name,
                "challenger": challenger,
                "champion": champion,
                "challenger_metric": new,
                "champion_metric": old,
                "requests": len(both),
                "verdict": verdict,
            }
        )
    return actions


def _live_metric(model: Any, metric: str, y: np.ndarray, scores: Any) -> float:
    values = evaluation.score_metrics(
        (metric,), y, np.asarray(scores, dtype=float), model.task, model.k
    )
    return float(values[metric])
