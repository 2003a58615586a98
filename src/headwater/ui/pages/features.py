"""Features: every definition with its aggregation, windows and filter; one feature's version
history, its distribution over time (quantiles at weekly snapshots of a sample of entities,
computed by the same point-in-time engine as training sets) and the models that read it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from headwater.definitions import Feature
from headwater.ui import reads
from headwater.ui.charts import line_chart
from headwater.ui.html import DAY_US, Safe, badge, day, esc, join, link, path, table, when
from headwater.ui.html import facts as html_facts
from headwater.ui.page import Drawn, NotFound, Page, Panel, panels
from headwater.ui.pages.common import expression, window

SNAPSHOTS, ENTITIES = 8, 300


def readers(page: Page) -> dict[str, set[str]]:
    """Feature definition (or derived feature) -> the models that read any of its values."""
    catalog = page.sources.catalog
    out: dict[str, set[str]] = {}
    for model in page.sources.definitions.models.values():
        for column in model.features:
            if column in catalog.columns:
                out.setdefault(catalog.columns[column].feature.name, set()).add(model.name)
            elif column in catalog.derived:
                out.setdefault(column, set()).add(model.name)
                for name in catalog.derived[column].inputs:
                    if name in catalog.columns:
                        out.setdefault(catalog.columns[name].feature.name, set()).add(model.name)
    return out


def _models(names: set[str]) -> Safe:
    return join(
        [Safe(", ").join(link(n, path("models", n)) for n in sorted(names))] if names else []
    )


def features(page: Page) -> Drawn:
    s = page.sources
    read_by = readers(page)
    rows = []
    for name, feature in sorted(s.definitions.features.items()):
        agg = feature.aggregation
        rows.append(
            [
                link(name, path("features", name)),
                feature.entity.name,
                link(feature.stream.name, path("streams", feature.stream.name)),
                f"{agg.kind}({agg.field or ''})",
                ", ".join(window(c.window_us) for c in feature.columns),
                expression(None if feature.where is None else feature.where.spec()),
                feature.owner,
                _models(read_by.get(name, set())),
            ]
        )
    head = ["Feature", "Entity", "Stream", "Aggregation", "Windows", "Filter", "Owner", "Read by"]
    derived = [
        [
            link(name, path("features", name)),
            ", ".join(d.inputs),
            ", ".join(d.context) or "–",
            d.owner,
            _models(read_by.get(name, set())),
        ]
        for name, d in sorted(s.definitions.derived.items())
    ]
    body = join(
        [
            table(head, rows, caption="Aggregations of a stream, per entity and window"),
            Safe("<h2>Derived features</h2>"),
            table(["Feature", "Inputs", "Request context", "Owner", "Read by"], derived),
        ]
    )
    return "Features", body, []


def feature(page: Page, name: str) -> Drawn:
    s = page.sources
    found: Any = s.definitions.features.get(name) or s.definitions.derived.get(name)
    if found is None:
        raise NotFound(f"no feature is named {name!r}")
    listed = PANELS if isinstance(found, Feature) else DERIVED_PANELS
    return name, panels(page, listed, found), [("Features", "/ui/features")]


def definition(page: Page, feature: Feature) -> Safe:
    agg = feature.aggregation
    facts = [
        ("Owner", feature.owner),
        ("Description", feature.description),
        ("Entity", f"{feature.entity.name} ({', '.join(feature.entity.keys)})"),
        ("Stream", link(feature.stream.name, path("streams", feature.stream.name))),
        ("Aggregation", f"{agg.kind}({agg.field or ''})" + (f", k={agg.k}" if agg.k else "")),
        ("Filter", expression(None if feature.where is None else feature.where.spec()) or "none"),
        ("Version", feature.version),
        ("Read by", _models(readers(page).get(feature.name, set())) or "no model"),
    ]
    if feature.deprecated:
        facts.append(("Deprecated", badge("deprecated", "warn")))
    columns = table(
        ["Value", "Window", "Hop"],
        [
            [c.name, window(c.window_us), window(c.hop_us) if c.hop_us else "–"]
            for c in feature.columns
        ],
    )
    return join([_facts(facts), columns])


def _facts(facts: Sequence[tuple[str, object]]) -> Safe:
    return html_facts(facts)


def versions(page: Page, feature: Any) -> Safe:
    kind = "feature" if isinstance(feature, Feature) else "derived"
    found = page.sources.metadata.history(kind, feature.name)
    current = feature.version
    rows = [
        [
            when(d.applied_at) if d.applied_at else "–",
            d.version,
            badge("current", "ok") if d.version == current else "",
            badge("deprecated", "warn") if d.meta.get("deprecated") else "",
            d.meta.get("applied_by", "–"),
            d.meta.get("owner", ""),
        ]
        for d in reversed(found)
    ]
    note = Safe(
        '<p class="muted">Each version is the hash of the definition\'s content; '
        "<code>headwater apply</code> records a new one when the definition changes.</p>"
    )
    return join([note, table(["Applied", "Content hash", "", "", "Applied by", "Owner"], rows)])


def over_time(page: Page, feature: Feature) -> Safe:
    if feature.output_dtype not in ("int", "float"):
        return Safe("<p>Not a number: no distribution over time is drawn.</p>")
    column = page.query.get("value") or feature.columns[0].name
    if column not in {c.name for c in feature.columns}:
        raise NotFound(f"feature {feature.name!r} has no value {column!r}")
    quantiles = _quantiles(page, feature, column)
    if not quantiles:
        return Safe("<p>No events yet.</p>")
    series = {
        label: [(d, q[i]) for d, q in quantiles] for i, label in enumerate(("p10", "median", "p90"))
    }
    chooser = "".join(
        f'<option value="{esc(c.name)}"{" selected" if c.name == column else ""}>{esc(c.name)}'
        "</option>"
        for c in feature.columns
    )
    form = Safe(
        f'<form class="filters" method="get"><div><label for="value">Value</label><br>'
        f'<select id="value" name="value">{chooser}</select></div>'
        '<div><button type="submit">Show</button></div></form>'
    )
    chart = line_chart(
        series,
        caption=f"{column} at weekly snapshots over {ENTITIES} entities of its stream "
        "(10th percentile, median, 90th percentile)",
        y_label=column,
    )
    return join([form, chart])


def _quantiles(page: Page, feature: Feature, column: str) -> list[tuple[str, list[float]]]:
    s = page.sources
    key = reads.offsets(s.log, feature.stream.name)
    return s.memo.get(
        ("feature-quantiles", feature.name, column), key, lambda: _compute(page, feature, column)
    )


def _compute(page: Page, feature: Feature, column: str) -> list[tuple[str, list[float]]]:
    s = page.sources
    history = reads.history(s, feature.stream)
    if history.num_rows == 0:
        return []
    keys = list(feature.entity.keys)
    entities = history.select(keys).to_pandas().drop_duplicates().sort_values(keys)
    step = max(1, len(entities) // ENTITIES)
    entities = entities.iloc[::step].head(ENTITIES)
    last = int(history.column("_event_time").to_numpy().max())
    first = int(history.column("_event_time").to_numpy().min())
    times = [last - i * 7 * DAY_US for i in range(SNAPSHOTS)][::-1]
    times = [t for t in times if t >= first] or [last]
    spine = pd.concat(
        [entities.assign(timestamp=pd.Timestamp(t + 1, unit="us", tz="UTC")) for t in times]
    )
    values = s.training.build(spine, [column]).to_pandas()
    out = []
    for t in times:
        at = values[values["timestamp"] == pd.Timestamp(t + 1, unit="us", tz="UTC")][column]
        numbers = pd.to_numeric(at, errors="coerce").dropna().to_numpy(dtype=float)
        if numbers.size:
            out.append((day(t), [float(v) for v in np.percentile(numbers, [10, 50, 90])]))
    return out


def derived_definition(page: Page, derived: Any) -> Safe:
    facts = [
        ("Owner", derived.owner),
        ("Description", derived.description),
        ("Inputs", join([Safe(", ").join(link(n, _input(page, n)) for n in derived.inputs)])),
        ("Request context", ", ".join(derived.context) or "none"),
        ("Type", derived.dtype.value),
        ("Version", derived.version),
        ("Read by", _models(readers(page).get(derived.name, set())) or "no model"),
    ]
    return _facts(facts)


def _input(page: Page, column: str) -> str:
    found = page.sources.catalog.columns.get(column)
    return path("features", found.feature.name if found else column)


PANELS = [
    Panel("Definition", definition),
    Panel("Version history", versions),
    Panel("Distribution over time", over_time),
]
DERIVED_PANELS = [
    Panel("Definition", derived_definition),
    Panel("Version history", versions),
]
