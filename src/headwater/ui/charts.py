"""Charts as inline SVG, drawn on the server: axes with ticks, a legend, a hover value on every
mark (its ``<title>``), an alert line where one applies, and the figures as a table beside the
chart for keyboards and screen readers. No script and no chart library to vendor."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta

from headwater.ui.html import Safe, esc, number, table

PALETTE = ("#1f5fa8", "#c2410c", "#15803d", "#7e22ce", "#a16207", "#0e7490", "#be185d")
ALERT = "#b91c1c"
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 14, 40
Points = Sequence[tuple[str, float | None]]
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high].

    >>> ticks(0, 1)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    >>> ticks(3, 3), ticks(0, 1234)
    ([2.4, 2.6, 2.8, 3.0, 3.2, 3.4, 3.6], [0.0, 250.0, 500.0, 750.0, 1000.0, 1250.0])
    """
    if high <= low:
        low, high = low - 0.5, high + 0.5
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    digits = max(0, 2 - math.floor(math.log10(step)))
    first = math.floor(low / step) * step
    out = [round(first + i * step, digits) + 0.0 for i in range(count * 3)]
    last = next(i for i, v in enumerate(out) if v >= high - step * 1e-9)
    return out[: last + 1]


def _frame(width: int, height: int, label: str) -> list[str]:
    return [
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{esc(label)}" class="chart">'
    ]


def _y_axis(parts: list[str], grid: list[float], y: object, width: int, fmt: str) -> None:
    for value in grid:
        py = y(value)  # type: ignore[operator]
        parts.append(
            f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end" class="tick">'
            f"{esc(format(value, fmt) if fmt else number(value, 3))}</text>"
        )


def _x_labels(
    parts: list[str], labels: Sequence[str], x: Callable[[int], float], height: int, ends: bool
) -> None:
    """At most 8 labels; with ``ends`` (a line's first and last points sit on the axis ends)
    the outer labels are anchored inwards so they stay inside the chart."""
    every = max(1, math.ceil(len(labels) / 8))
    for i, text in enumerate(labels):
        if i % every:
            continue
        anchor = "middle"
        if ends and len(labels) > 1:
            anchor = "start" if i == 0 else "end" if i == len(labels) - 1 else "middle"
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - BOTTOM + 16}" text-anchor="{anchor}" '
            f'class="tick">{esc(text)}</text>'
        )


def fill_days(labels: Sequence[str]) -> list[str]:
    """Labels that are all UTC days, with the days between them added (a time axis).

    >>> fill_days(["2026-01-30", "2026-02-02"])
    ['2026-01-30', '2026-01-31', '2026-02-01', '2026-02-02']
    >>> fill_days(["a", "b"])
    ['a', 'b']
    """
    if not labels or not all(DAY.fullmatch(label) for label in labels):
        return list(labels)
    first, last = date.fromisoformat(min(labels)), date.fromisoformat(max(labels))
    if (last - first).days > 400:
        return sorted(labels)
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _legend(names: Sequence[str], width: int) -> str:
    if len(names) < 2:
        return ""
    items = "".join(
        f'<li><span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></span>'
        f"{esc(name)}</li>"
        for i, name in enumerate(names)
    )
    return f'<ul class="legend">{items}</ul>'


def _figure(svg: str, legend: str, caption: str, data: Safe) -> Safe:
    return Safe(
        f'<figure class="figure">{svg}{legend}<figcaption>{esc(caption)}</figcaption>'
        f"<details><summary>Figures</summary>{data}</details></figure>"
    )


def line_chart(
    series: Mapping[str, Points],
    *,
    caption: str,
    y_label: str = "",
    threshold: float | None = None,
    threshold_label: str = "alert",
    width: int = 640,
    height: int = 230,
    y_format: str = "",
) -> Safe:
    """One line per series over the same x labels (days, usually); gaps where a value is None."""
    series = {
        name: [(x, v if _finite(v) else None) for x, v in points] for name, points in series.items()
    }
    labels = fill_days(sorted({x for points in series.values() for x, _ in points}))
    values = [v for points in series.values() for _, v in points if v is not None]
    if not labels or not values:
        return Safe('<p class="muted">No figures yet.</p>')
    if threshold is not None:
        values.append(threshold)
    grid = ticks(min(0.0, min(values)), max(values))
    low, high = grid[0], grid[-1]
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    step = plot_w / max(1, len(labels) - 1)

    def x(i: int) -> float:
        return LEFT + (i * step if len(labels) > 1 else plot_w / 2)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - (v - low) / ((high - low) or 1))

    parts = _frame(width, height, caption)
    _y_axis(parts, grid, y, width, y_format)
    _x_labels(parts, labels, x, height, ends=True)
    if y_label:
        parts.append(
            f'<text x="12" y="{TOP + plot_h / 2:.1f}" transform="rotate(-90 12 '
            f'{TOP + plot_h / 2:.1f})" text-anchor="middle" class="axis">{esc(y_label)}</text>'
        )
    if threshold is not None:
        parts.append(
            f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y(threshold):.1f}" '
            f'y2="{y(threshold):.1f}" stroke="{ALERT}" stroke-dasharray="5 4">'
            f"<title>{esc(threshold_label)} {number(threshold)}</title></line>"
        )
    index = {label: i for i, label in enumerate(labels)}
    for n, (name, points) in enumerate(series.items()):
        color = PALETTE[n % len(PALETTE)]
        segments: list[list[str]] = [[]]
        for label, value in sorted(points):
            if value is None:
                segments.append([])
                continue
            segments[-1].append(f"{x(index[label]):.1f},{y(value):.1f}")
            parts.append(
                f'<circle cx="{x(index[label]):.1f}" cy="{y(value):.1f}" r="3.5" '
                f'fill="{color}"><title>{esc(name)} · {esc(label)}: {number(value)}</title>'
                "</circle>"
            )
        for segment in segments:
            if len(segment) > 1:
                parts.insert(
                    1,
                    f'<polyline points="{" ".join(segment)}" fill="none" stroke="{color}" '
                    'stroke-width="2"/>',
                )
    parts.append(_axes(width, height))
    parts.append("</svg>")
    rows = [
        [label] + [_value(dict(points).get(label)) for points in series.values()]
        for label in labels
    ]
    data = table(["", *series.keys()], rows)
    return _figure("".join(parts), _legend(list(series), width), caption, data)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _value(value: float | None) -> str:
    return number(value)


def _axes(width: int, height: int) -> str:
    return (
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{height - BOTTOM}" class="axis-line"/>'
        f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{height - BOTTOM}" y2="{height - BOTTOM}" '
        'class="axis-line"/>'
    )


def bar_chart(
    series: Mapping[str, Sequence[float]],
    categories: Sequence[str],
    *,
    caption: str,
    y_label: str = "",
    width: int = 640,
    height: int = 230,
    y_format: str = "",
) -> Safe:
    """Vertical bars per category, one bar per series side by side (a histogram when the
    categories are bins, live against reference when there are two series)."""
    series = {name: [v if _finite(v) else 0.0 for v in vs] for name, vs in series.items()}
    values = [v for vs in series.values() for v in vs]
    if not categories or not values:
        return Safe('<p class="muted">No figures yet.</p>')
    grid = ticks(min(0.0, min(values)), max(values))
    low, high = grid[0], grid[-1]
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    slot = plot_w / len(categories)
    bar = slot * 0.8 / len(series)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - (v - low) / ((high - low) or 1))

    def center(i: int) -> float:
        return LEFT + slot * (i + 0.5)

    parts = _frame(width, height, caption)
    _y_axis(parts, grid, y, width, y_format)
    _x_labels(parts, categories, center, height, ends=False)
    if y_label:
        parts.append(
            f'<text x="12" y="{TOP + plot_h / 2:.1f}" transform="rotate(-90 12 '
            f'{TOP + plot_h / 2:.1f})" text-anchor="middle" class="axis">{esc(y_label)}</text>'
        )
    for n, (name, vs) in enumerate(series.items()):
        color = PALETTE[n % len(PALETTE)]
        for i, value in enumerate(vs):
            left = LEFT + slot * i + slot * 0.1 + bar * n
            top, bottom = y(max(value, 0.0)), y(min(value, 0.0))
            parts.append(
                f'<rect x="{left:.1f}" y="{top:.1f}" width="{max(bar - 1, 1):.1f}" '
                f'height="{max(bottom - top, 0.5):.1f}" fill="{color}">'
                f"<title>{esc(name)} · {esc(categories[i])}: {number(value)}</title></rect>"
            )
    parts.append(_axes(width, height))
    parts.append("</svg>")
    rows = [[c] + [number(vs[i]) for vs in series.values()] for i, c in enumerate(categories)]
    data = table(["", *series.keys()], rows)
    return _figure("".join(parts), _legend(list(series), width), caption, data)


def hbar_chart(
    bars: Sequence[tuple[str, float]],
    *,
    caption: str,
    x_label: str = "",
    threshold: float | None = None,
    threshold_label: str = "alert",
    width: int = 640,
) -> Safe:
    """Horizontal bars with their labels (importances, PSI per feature)."""
    bars = [(name, v) for name, v in bars if _finite(v)]
    if not bars:
        return Safe('<p class="muted">No figures yet.</p>')
    label_w, row = 170, 20
    height = TOP + row * len(bars) + BOTTOM
    values = [v for _, v in bars] + ([threshold] if threshold is not None else [])
    grid = ticks(min(0.0, min(values)), max(values))
    low, high = grid[0], grid[-1]
    plot_w = width - label_w - RIGHT

    def x(v: float) -> float:
        return label_w + plot_w * (v - low) / ((high - low) or 1)

    parts = _frame(width, height, caption)
    for value in grid:
        parts.append(
            f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{TOP}" '
            f'y2="{height - BOTTOM}" class="grid"/>'
            f'<text x="{x(value):.1f}" y="{height - BOTTOM + 16}" text-anchor="middle" '
            f'class="tick">{esc(number(value, 3))}</text>'
        )
    for i, (name, value) in enumerate(bars):
        top = TOP + i * row + 3
        short = name if len(name) <= 26 else name[:25] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{top + 11}" text-anchor="end" class="tick">'
            f"{esc(short)}</text>"
            f'<rect x="{x(min(value, 0.0)):.1f}" y="{top}" '
            f'width="{max(abs(x(value) - x(0.0)), 0.5):.1f}" height="{row - 6}" '
            f'fill="{PALETTE[0]}"><title>{esc(name)}: {number(value)}</title></rect>'
        )
    if threshold is not None:
        parts.append(
            f'<line x1="{x(threshold):.1f}" x2="{x(threshold):.1f}" y1="{TOP}" '
            f'y2="{height - BOTTOM}" stroke="{ALERT}" stroke-dasharray="5 4">'
            f"<title>{esc(threshold_label)} {number(threshold)}</title></line>"
        )
    if x_label:
        parts.append(
            f'<text x="{label_w + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" '
            f'class="axis">{esc(x_label)}</text>'
        )
    parts.append("</svg>")
    data = table(["", x_label or "value"], [[n, number(v)] for n, v in bars])
    return _figure("".join(parts), "", caption, data)


def interval_chart(
    rows: Sequence[tuple[str, float, float, float]],
    *,
    caption: str,
    x_label: str = "",
    width: int = 640,
) -> Safe:
    """Means with their confidence intervals, one row per (label, mean, low, high)."""
    rows = [r for r in rows if all(_finite(v) for v in r[1:])]
    if not rows:
        return Safe('<p class="muted">No figures yet.</p>')
    label_w, row = 170, 26
    height = TOP + row * len(rows) + BOTTOM
    grid = ticks(min(r[2] for r in rows), max(r[3] for r in rows))
    low, high = grid[0], grid[-1]
    plot_w = width - label_w - RIGHT

    def x(v: float) -> float:
        return label_w + plot_w * (v - low) / ((high - low) or 1)

    parts = _frame(width, height, caption)
    for value in grid:
        parts.append(
            f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{TOP}" '
            f'y2="{height - BOTTOM}" class="grid"/>'
            f'<text x="{x(value):.1f}" y="{height - BOTTOM + 16}" text-anchor="middle" '
            f'class="tick">{esc(number(value, 3))}</text>'
        )
    for i, (name, mean, lo, hi) in enumerate(rows):
        cy = TOP + i * row + row / 2
        color = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<text x="{label_w - 6}" y="{cy + 4:.1f}" text-anchor="end" class="tick">'
            f"{esc(name)}</text>"
            f"<g><title>{esc(name)}: {number(mean)} [{number(lo)}, {number(hi)}]</title>"
            f'<line x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{cy:.1f}" y2="{cy:.1f}" '
            f'stroke="{color}" stroke-width="3"/>'
            f'<circle cx="{x(mean):.1f}" cy="{cy:.1f}" r="5" fill="{color}"/></g>'
        )
    if x_label:
        parts.append(
            f'<text x="{label_w + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" '
            f'class="axis">{esc(x_label)}</text>'
        )
    parts.append("</svg>")
    data = table(
        ["", "mean", "95% low", "95% high"],
        [[n, number(m), number(lo), number(hi)] for n, m, lo, hi in rows],
    )
    return _figure("".join(parts), "", caption, data)
