"""Pieces several pages share: alert rows (with their acknowledge action), a filter as text,
window lengths, owners."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from headwater.ui.html import Safe, badge, join, link, path, when
from headwater.ui.page import Page, action_button

LEVELS = {"alert": "alert", "warn": "warn", "ok": "ok", "insufficient": ""}


def level_badge(level: str) -> Safe:
    return badge(level, LEVELS.get(level, ""))


def alert_rows(page: Page, alerts: Sequence[Any]) -> list[list[object]]:
    """Table rows of alerts: when, level, model, what, why, owner, and the acknowledgement
    (or its button, where the key may acknowledge)."""
    rows: list[list[object]] = []
    for alert in alerts:
        body = alert.body
        model = body.get("model")
        what = body.get("column") or body.get("feature") or body.get("kind", "")
        version = body.get("model_version")
        target = (
            link(f"{model} v{version}" if version else model, path("monitoring", model))
            if model
            else body.get("service", "")
        )
        rows.append(
            [
                when(alert.at_us),
                level_badge(body.get("level", body.get("kind", ""))),
                target,
                f"{body.get('kind', '')}: {what}",
                "; ".join(body.get("reasons", [])) or _skew(body),
                body.get("owner", ""),
                _ack(page, alert),
            ]
        )
    return rows


def _skew(body: dict[str, Any]) -> str:
    if body.get("kind") != "skew":
        return ""
    return f"online {body.get('online')!r} ≠ offline {body.get('offline')!r}"


def _ack(page: Page, alert: Any) -> Safe:
    if alert.ack:
        ack = alert.ack
        text = f"acknowledged by {ack.get('by', '?')} {when(ack.get('at_us'))}"
        return join(
            [
                badge("acknowledged", "ok"),
                " ",
                text,
                f": {ack['reason']}" if ack.get("reason") else "",
            ]
        )
    if not page.may("alerts:ack"):
        return Safe("")
    return action_button(
        "Acknowledge",
        f"Acknowledge alert {alert.id}",
        f"/v1/alerts/{alert.id}/ack",
    )


def expression(spec: Any) -> str:
    """A filter's spec as people write it.

    >>> expression(["and", ["==", "status", "paid"], ["in", "country", ["FR", "DE"]]])
    "(status == 'paid') and (country in ['FR', 'DE'])"
    """
    if spec is None:
        return ""
    if not isinstance(spec, list) or not spec:
        return json.dumps(spec)
    op, *args = spec
    if op in ("and", "or"):
        return f" {op} ".join(f"({expression(a)})" for a in args)
    if op == "not":
        return f"not ({expression(args[0])})"
    if len(args) == 2 and isinstance(args[0], str):
        return f"{args[0]} {op} {args[1]!r}"
    return f"{op}({', '.join(map(repr, args))})"


def window(us: int | None) -> str:
    """A window's length: ``1h``, ``7d``, ``lifetime``.

    >>> window(3_600_000_000), window(7 * 86_400_000_000), window(None), window(90_000_000)
    ('1h', '7d', 'lifetime', '90s')
    """
    if us is None:
        return "lifetime"
    seconds = us // 1_000_000
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min")):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
