"""The overview: what arrives (ingest per stream, last hour and day), what is behind (processor
and archive lag), what is wrong (open alerts) and what serves (services, champions, traffic)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from headwater.log.base import Log
from headwater.ui import reads
from headwater.ui.html import (
    DAY_US,
    HOUR_US,
    Safe,
    ago,
    badge,
    join,
    link,
    number,
    path,
    table,
)
from headwater.ui.html import facts as html_facts
from headwater.ui.page import DIALOG, Drawn, Page, Panel, panels
from headwater.ui.pages.common import alert_rows


def cards(page: Page) -> Safe:
    s = page.sources
    events = sum(sum(reads.offsets(s.log, name)) for name in s.definitions.streams)
    open_alerts = len(s.alerts.list(open_only=True))
    figures = (
        ("Streams", number(len(s.definitions.streams)), "/ui/streams"),
        ("Events in the log", number(events), "/ui/streams"),
        ("Features", number(len(s.catalog.columns) + len(s.catalog.derived)), "/ui/features"),
        ("Models", number(len(s.definitions.models)), "/ui/models"),
        ("Services", number(len(s.definitions.services)), "/ui/services"),
        ("Open alerts", number(open_alerts), "/ui/monitoring"),
    )
    items = "".join(
        f'<div class="card"><div class="muted">{label}</div>'
        f'<div class="figure-big">{link(value, href)}</div></div>'
        for label, value, href in figures
    )
    return Safe(f'<div class="cards">{items}</div>')


def ingest(page: Page) -> Safe:
    s = page.sources
    dead = reads.dead_letters(s)
    rows = []
    for name, stream in sorted(s.definitions.streams.items()):
        rows.append(
            [
                link(name, path("streams", name)),
                stream.owner,
                number(sum(reads.offsets(s.log, name))),
                number(reads.ingested_since(s.log, name, page.now - HOUR_US)),
                number(reads.ingested_since(s.log, name, page.now - DAY_US)),
                ago(_ingested(s.log, name), page.now),
                _dead(dead.count(name), name),
            ]
        )
    head = ["Stream", "Owner", "Events", "Last hour", "Last day", "Last ingest", "Dead letters"]
    return table(head, rows, caption="Events appended to the log, by ingest time")


def _dead(count: int, stream: str) -> Safe:
    if not count:
        return Safe("0")
    return link(badge(f"{count:,}", "alert"), path("streams", stream) + "#h-dead-letters")


def _ingested(log: Log, stream: str) -> int | None:
    latest = reads.latest_record(log, stream)
    return latest.ingest_time if latest else None


def lag(page: Page) -> Safe:
    s = page.sources
    lags = s.lag()
    rows = [
        [
            plan.id,
            link(plan.stream.name, path("streams", plan.stream.name)),
            number(lags.get(plan.id, 0)),
            badge("behind", "warn") if lags.get(plan.id) else badge("up to date", "ok"),
        ]
        for plan in s.catalog.plans
    ]
    processor = table(
        ["Feature set", "Stream", "Not yet applied", "State"],
        rows,
        caption="The stream processor: events in the log not yet applied to the online store",
    )
    archive = []
    for name in sorted(s.definitions.streams):
        ends = reads.offsets(s.log, name)
        behind = sum(end - s.offline.committed(name, p) for p, end in enumerate(ends))
        archive.append([link(name, path("streams", name)), number(behind)])
    archived = table(
        ["Stream", "Not yet archived"],
        archive,
        caption="The archiver: events in the log not yet in the offline history (training "
        "sets and summaries bring it up to date first)",
    )
    return join([processor, archived, _sources(page)])


def _sources(page: Page) -> Safe:
    found = page.sources.source_status()
    if not found:
        return Safe("")
    rows = [
        [
            r["source"],
            link(r["stream"], path("streams", r["stream"])),
            r.get("reads", ""),
            r.get("position", ""),
            number(r.get("events", 0)),
            ago(r.get("updated_at"), page.now),
        ]
        for r in found
    ]
    head = ["Source", "Stream", "Reads", "Position", "Events", "Updated"]
    return table(head, rows, caption="Sources: tables and change streams read into the log")


def alerts(page: Page) -> Safe:
    found = page.sources.alerts.list(open_only=True)
    if not found:
        return Safe("<p>No open alert.</p>")
    latest = sorted(found, key=lambda a: -a.at_us)[:10]
    more = len(found) - len(latest)
    every = link(f"All {len(found):,} open alerts", "/ui/monitoring#h-alerts")
    note = Safe(f"<p>{every}</p>") if more else ""
    head = ["When", "Level", "Model", "What", "Why", "Owner", ""]
    return join([table(head, alert_rows(page, latest)), note])


def services(page: Page) -> Safe:
    s = page.sources
    frame = reads.predictions(s)
    rows = []
    for name, service in sorted(s.definitions.services.items()):
        served = frame[frame["service"] == name] if not frame.empty else frame
        for variant in service.variants:
            version = s.registry.alias(variant.model.name, variant.alias)
            mine = served[served["variant"] == variant.name] if not served.empty else served
            last_day = int((mine["ts_us"] >= page.now - DAY_US).sum()) if not mine.empty else 0
            rows.append(
                [
                    link(name, path("services", name)),
                    service.routing,
                    variant.name,
                    link(variant.model.name, path("models", variant.model.name)),
                    join([badge(variant.alias, "alias"), f" v{version}" if version else " none"]),
                    number(len(mine)),
                    number(last_day),
                ]
            )
    head = ["Service", "Routing", "Variant", "Model", "Alias → version", "Predictions", "Last day"]
    return table(head, rows, caption="What each service serves, and how much")


def environment(page: Page) -> Safe:
    s = page.sources
    others = [e for e in s.declared if e != s.environment]
    facts = [
        ("This environment", s.environment),
        ("Namespace on shared stores", s.namespace or "none (the stores as [stores] names them)"),
        ("Other environments", ", ".join(others) or "none declared"),
        *((f"Store: {kind}", shown_url(url)) for kind, url in sorted(s.stores.items())),
    ]
    return html_facts(facts)


SHOWN_OPTIONS = frozenset({"prefix", "namespace", "schema", "partitions", "engine"})


def shown_url(url: str) -> str:
    """A store's URL as a page may show it: no user, password or token, and of its options
    only those that say where the data is.

    >>> shown_url("redis://TOKEN@cache:6379/0?namespace=staging&password=s3cret")
    'redis://cache:6379/0?namespace=staging'
    >>> shown_url("sqlite:///.headwater/log.db")
    'sqlite:///.headwater/log.db'
    """
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    kept = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k in SHOWN_OPTIONS])
    return f"{parts.scheme}://{host}{parts.path}" + (f"?{kept}" if kept else "")


PANELS = [
    Panel("At a glance", cards),
    Panel("Ingest", ingest),
    Panel("Processor lag", lag),
    Panel("Open alerts", alerts),
    Panel("Services", services),
    Panel("Environment", environment),
]


def overview(page: Page) -> Drawn:
    return f"{page.sources.name}: overview", join([panels(page, PANELS), DIALOG]), []
