"""Building the UI's HTML: escaping by default (``Safe`` marks what is already HTML), the
page layout with its navigation, and the small pieces every page uses (tables, links, times)."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from headwater.serving.http.guards import UI_COOKIE

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
ASSETS = "/ui/assets"
COOKIE = UI_COOKIE


class Safe(str):
    """Text that is HTML already: inserted as it is, where anything else is escaped.

    >>> Safe(", ").join(["<b>", Safe("<i>")])
    '&lt;b&gt;, <i>'
    """

    __slots__ = ()

    def join(self, parts: Iterable[object]) -> Safe:  # type: ignore[override]
        return Safe(str.join(self, (esc(p) for p in parts)))


def esc(value: object) -> Safe:
    """``value`` as HTML text: escaped unless it is ``Safe``.

    >>> esc("<b>") + esc(Safe("<i>"))
    '&lt;b&gt;<i>'
    """
    if isinstance(value, Safe):
        return value
    return Safe(html.escape("" if value is None else str(value)))


def join(parts: Iterable[object]) -> Safe:
    return Safe("".join(esc(p) for p in parts))


def tag(name: str, content: object = "", **attrs: object) -> Safe:
    """``<name attrs>content</name>``; ``class_`` is written ``class``, ``None`` omits it.

    >>> tag("a", "x & y", href="/ui?a=1&b=2", class_="k")
    '<a href="/ui?a=1&amp;b=2" class="k">x &amp; y</a>'
    """
    written = "".join(
        f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' if v is not True else f" {k}"
        for k, v in attrs.items()
        if v is not None and v is not False
    )
    return Safe(f"<{name}{written}>{esc(content)}</{name}>")


def link(text: object, href: str, **attrs: object) -> Safe:
    return tag("a", text, href=href, **attrs)


def path(*parts: str) -> str:
    """A UI address from names, each quoted: ``path("streams", "a b")`` -> ``/ui/streams/a%20b``."""
    return "/ui/" + "/".join(quote(p, safe="") for p in parts)


def table(
    head: Sequence[object], rows: Iterable[Sequence[object]], *, caption: str | None = None
) -> Safe:
    """A table; numbers are right-aligned. An empty table says so instead."""
    body = []
    for row in rows:
        cells = "".join(tag("td", cell, class_="num" if _numeric(cell) else None) for cell in row)
        body.append(f"<tr>{cells}</tr>")
    if not body:
        return tag("p", "Nothing recorded yet.", class_="muted")
    header = "".join(tag("th", h, scope="col") for h in head)
    cap = tag("caption", caption) if caption else ""
    return Safe(
        f'<div class="scroll"><table>{cap}<thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _numeric(cell: object) -> bool:
    return isinstance(cell, int | float) and not isinstance(cell, bool)


def number(value: float | int | None, digits: int = 4) -> str:
    """A figure for people: thousands separated, floats to ``digits`` significant digits.

    >>> number(1234567), number(0.123456), number(None), number(float("nan"))
    ('1,234,567', '0.1235', '–', '–')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def when(us: int | None) -> str:
    """A time in microseconds as UTC: ``2026-12-05 14:03``."""
    if us is None:
        return "–"
    return datetime.fromtimestamp(us / 1e6, tz=UTC).strftime("%Y-%m-%d %H:%M")


def day(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).strftime("%Y-%m-%d")


def ago(us: int | None, now: int) -> str:
    """How long before ``now``: ``3 min ago``, ``2.5 h ago``, ``4 days ago``.

    >>> ago(0, 90_000_000), ago(0, 3 * 3_600_000_000), ago(None, 0)
    ('1.5 min ago', '3 h ago', 'never')
    """
    if us is None:
        return "never"
    seconds = max(0.0, (now - us) / 1e6)
    for size, unit in ((86_400, "days"), (3_600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit} ago"
    return f"{seconds:.0f} s ago"


def facts(pairs: Iterable[tuple[object, object]]) -> Safe:
    """A definition list of (name, value) pairs, both escaped unless ``Safe``."""
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs)
    return Safe(f'<dl class="facts">{items}</dl>')


def badge(text: object, kind: str = "") -> Safe:
    return tag("span", text, class_=f"badge {kind}".strip())


def section(title: str, content: object, *, id_: str | None = None) -> Safe:
    anchor = id_ or "-".join(title.lower().split())
    return Safe(
        f'<section aria-labelledby="h-{esc(anchor)}"><h2 id="h-{esc(anchor)}">{esc(title)}</h2>'
        f"{esc(content)}</section>"
    )


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the key's id and team, or anonymous when auth is off."""

    key_id: str = "-"
    team: str = "anonymous"
    signed_in: bool = False


NAV = (
    ("overview", "Overview", "/ui"),
    ("streams", "Streams", "/ui/streams"),
    ("features", "Features", "/ui/features"),
    ("lineage", "Lineage", "/ui/lineage"),
    ("models", "Models", "/ui/models"),
    ("services", "Services", "/ui/services"),
    ("monitoring", "Monitoring", "/ui/monitoring"),
)


def layout(
    title: str,
    body: object,
    *,
    active: str,
    project: str,
    environment: str,
    viewer: Viewer,
    crumbs: Sequence[tuple[str, str]] = (),
) -> Safe:
    """A whole page: head, skip link, navigation, breadcrumbs, the body, who is signed in."""
    nav = "".join(
        tag("li", link(label, href, aria_current="page" if key == active else None))
        for key, label, href in NAV
    )
    trail = ""
    if crumbs:
        items = "".join(tag("li", link(text, href)) for text, href in crumbs)
        trail = f'<nav aria-label="Breadcrumb" class="crumbs"><ol>{items}</ol></nav>'
    who = f"{esc(viewer.team)} · key {esc(viewer.key_id)}" if viewer.signed_in else "auth off"
    out = (
        '<form method="post" action="/ui/logout" class="inline" data-logout>'
        '<button type="submit" class="link">Sign out</button></form>'
        if viewer.signed_in
        else ""
    )
    return Safe(
        "<!doctype html>"
        f'<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · {esc(project)} · headwater</title>"
        f'<link rel="icon" href="{ASSETS}/favicon.svg" type="image/svg+xml">'
        f'<link rel="stylesheet" href="{ASSETS}/ui.css">'
        f'<script src="{ASSETS}/ui.js" defer></script></head><body>'
        f'<a class="skip" href="#main">Skip to content</a>'
        f'<header class="top"><a class="brand" href="/ui">headwater</a>'
        f'<span class="project">{esc(project)} · environment {esc(environment)}</span>'
        f'<span class="who">{who}{out}</span></header>'
        f'<nav aria-label="Pages" class="pages"><ul>{nav}</ul></nav>'
        f'<main id="main" tabindex="-1">{trail}<h1>{esc(title)}</h1>{esc(body)}</main>'
        "</body></html>"
    )
