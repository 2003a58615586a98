"""Streams: every raw stream with its owner and freshness; one stream's schema (PII flagged,
never shown), events per day, dead letters with their reasons, field summaries from the
archived history, and its latest events with mock values standing in for PII."""

from __future__ import annotations

from typing import Any

from headwater.definitions import Stream
from headwater.history.describe import latest_events
from headwater.ui import reads
from headwater.ui.charts import bar_chart, line_chart
from headwater.ui.html import (
    Safe,
    ago,
    badge,
    join,
    link,
    number,
    path,
    table,
    tag,
    when,
)
from headwater.ui.html import facts as html_facts
from headwater.ui.page import Drawn, NotFound, Page, Panel, panels


def streams(page: Page) -> Drawn:
    s = page.sources
    dead = reads.dead_letters(s)
    rows = []
    for name, stream in sorted(s.definitions.streams.items()):
        latest = reads.latest_record(s.log, name)
        rows.append(
            [
                link(name, path("streams", name)),
                stream.owner,
                stream.description,
                ", ".join(stream.keys),
                join(badge(f, "pii") for f in stream.pii_fields) if stream.pii_fields else "",
                number(sum(reads.offsets(s.log, name))),
                ago(latest.event_time if latest else None, page.now),
                number(dead.count(name)),
            ]
        )
    head = ["Stream", "Owner", "Description", "Keys", "PII", "Events", "Latest event", "Dead"]
    # from the log alone (a read of its last records): the list stays fast however long it is
    return "Streams", table(head, rows), []


def stream(page: Page, name: str) -> Drawn:
    found = page.sources.definitions.streams.get(name)
    if found is None:
        raise NotFound(f"no stream is named {name!r}")
    return name, panels(page, PANELS, found), [("Streams", "/ui/streams")]


def about(page: Page, stream: Stream) -> Safe:
    figures = reads.stream_figures(page.sources, stream)
    facts = [
        ("Owner", stream.owner),
        ("Description", stream.description),
        ("Keys", ", ".join(stream.keys)),
        ("Event time", stream.time),
        ("Version", stream.version),
        ("Events archived", number(figures.events)),
        ("Latest event", f"{when(figures.last_event_us)} ({ago(figures.last_event_us, page.now)})"),
        (
            "Latest ingest",
            f"{when(figures.last_ingest_us)} ({ago(figures.last_ingest_us, page.now)})",
        ),
    ]
    if stream.deprecated:
        facts.append(("Deprecated", badge("deprecated", "warn")))
    return html_facts(facts)


def schema(page: Page, stream: Stream) -> Safe:
    rows = []
    for field in stream.fields.values():
        policy = stream.pii_policies.get(field.name)
        rows.append(
            [
                field.name,
                field.dtype.value,
                "key"
                if field.name in stream.keys
                else ("time" if field.name == stream.time else ""),
                "yes" if field.nullable else "no",
                badge(f"PII: {policy}", "pii") if policy else "",
            ]
        )
    return table(["Field", "Type", "Role", "Nullable", "PII"], rows)


def per_day(page: Page, stream: Stream) -> Safe:
    figures = reads.stream_figures(page.sources, stream)
    return line_chart(
        {"events": figures.per_day[-90:]},
        caption=f"Events of {stream.name} per day (event time, UTC), last 90 days",
        y_label="events",
    )


def dead_letters(page: Page, stream: Stream) -> Safe:
    found = reads.dead_letters(page.sources).of(stream.name)
    if not found:
        return Safe("<p>No event of this stream was rejected.</p>")
    shown = [(reason, number(n)) for reason, n in found[:20]]
    rest = sum(n for _, n in found[20:])
    if rest:
        shown.append((f"{len(found) - 20:,} other reasons", number(rest)))
    total = sum(n for _, n in found)
    caption = f"{total:,} rejected events, kept in _dead_letter, by reason (most frequent first)"
    return table(["Reason", "Events"], shown, caption=caption)


def summaries(page: Page, stream: Stream) -> Safe:
    if not page.owns(stream.owner):
        return _not_yours(stream)
    figures = reads.stream_figures(page.sources, stream)
    rows = []
    for _, r in figures.fields.iterrows():
        pii = bool(r["pii"])
        rows.append(
            [
                r["field"],
                r["type"],
                number(int(r["count"])),
                f"{float(r['null_rate']):.1%}",
                number(int(r["distinct"])),
                "masked" if pii else _shown(r["min"]),
                "masked" if pii else _shown(r["max"]),
                "" if pii else _shown(r.get("mean")),
            ]
        )
    head = ["Field", "Type", "Count", "Null rate", "Distinct", "Min", "Max", "Mean"]
    charts = []
    for field, (labels, counts) in figures.values.items():
        kind = stream.fields[field].dtype.value
        what = "histogram" if kind in ("int", "float") else "most frequent values"
        charts.append(
            bar_chart({"events": counts}, labels, caption=f"{field}: {what}", width=520, height=200)
        )
    return join([table(head, rows), Safe(f'<div class="grid2">{"".join(charts)}</div>')])


def _shown(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if hasattr(value, "isoformat"):
        return str(value)[:19]
    return number(value) if isinstance(value, int | float) else str(value)


def _not_yours(stream: Stream) -> Safe:
    return tag(
        "p",
        f"Values of {stream.name} are shown to its team ({stream.owner}) and to admin keys.",
        class_="muted",
    )


def sample(page: Page, stream: Stream) -> Safe:
    if not page.owns(stream.owner):
        return _not_yours(stream)
    events = latest_events(page.sources.log, stream, 10, mock=True)
    if not events:
        return Safe("<p>No event yet.</p>")
    names = list(stream.fields)
    rows = []
    for event in reversed(events):
        mocked = set(event.get("_mock", [])) | set(event.get("_masked", []))
        cells: list[object] = [when(event["_event_time"])]
        for name in names:
            if name == stream.time:
                continue
            value = event.get(name)
            cells.append(
                join([str(value), " ", badge("mock", "pii")]) if name in mocked else _shown(value)
            )
        rows.append(cells)
    head = ["Event time", *[n for n in names if n != stream.time]]
    note = (
        tag(
            "p",
            "PII fields show mock values: realistic fakes, stable per pseudonym, never the "
            "clear value (headwater never holds it).",
            class_="muted",
        )
        if stream.pii_fields
        else ""
    )
    return join([note, table(head, rows, caption="The 10 latest events in the log")])


PANELS = [
    Panel("About", about),
    Panel("Schema", schema),
    Panel("Events per day", per_day),
    Panel("Dead letters", dead_letters),
    Panel("Field summaries", summaries),
    Panel("Latest events", sample),
]
