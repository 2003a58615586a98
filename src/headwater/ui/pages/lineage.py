"""Lineage: the path from each raw stream to the services that answer with it — stream →
feature set (a feature definition) → feature (one of its values, or a derived feature) →
model → version → service — every node a link, filtered by team."""

from __future__ import annotations

from headwater.ui.graph import Lineage, Node, draw
from headwater.ui.html import Safe, esc, join, path
from headwater.ui.page import Drawn, Page


def lineage_of(page: Page) -> Lineage:
    s = page.sources
    d, catalog = s.definitions, s.catalog
    nodes: list[Node] = []
    edges: list[tuple[str, str]] = []
    for name, stream in d.streams.items():
        nodes.append(Node("stream", name, stream.owner, path("streams", name)))
    for name, feature in d.features.items():
        nodes.append(Node("feature set", name, feature.owner, path("features", name)))
        edges.append((f"stream:{feature.stream.name}", f"feature set:{name}"))
        for column in feature.columns:
            href = path("features", name) + f"?value={column.name}"
            nodes.append(Node("feature", column.name, feature.owner, href))
            edges.append((f"feature set:{name}", f"feature:{column.name}"))
    for name, derived in d.derived.items():
        nodes.append(Node("feature", name, derived.owner, path("features", name)))
        edges += [
            (f"feature:{i}", f"feature:{name}") for i in derived.inputs if i in catalog.columns
        ]
    for name, model in d.models.items():
        nodes.append(Node("model", name, model.owner, path("models", name)))
        edges += [(f"feature:{c}", f"model:{name}") for c in model.features]
        edges.append((f"stream:{model.label.stream.name}", f"model:{name}"))
        for doc in s.registry.versions(name):
            v = f"{name} v{doc['version']}"
            nodes.append(
                Node("version", v, model.owner, path("models", name) + f"#v{doc['version']}")
            )
            edges.append((f"model:{name}", f"version:{v}"))
    for name, service in d.services.items():
        nodes.append(Node("service", name, service.owner, path("services", name)))
        for variant in service.variants:
            version = s.registry.alias(variant.model.name, variant.alias)
            if version is not None:
                edges.append((f"version:{variant.model.name} v{version}", f"service:{name}"))
            else:
                edges.append((f"model:{variant.model.name}", f"service:{name}"))
    return Lineage(nodes, edges)


def lineage(page: Page) -> Drawn:
    graph = lineage_of(page)
    chosen = page.query.get("team", "")
    teams = graph.teams()
    if chosen in teams:
        graph = graph.around(chosen)
    options = '<option value="">every team</option>' + "".join(
        f'<option value="{esc(t)}"{" selected" if t == chosen else ""}>{esc(t)}</option>'
        for t in teams
    )
    form = Safe(
        '<form class="filters" method="get"><div><label for="team">Team</label><br>'
        f'<select id="team" name="team">{options}</select></div>'
        '<div><button type="submit">Filter</button></div></form>'
    )
    note = Safe(
        '<p class="muted">A team shows what it owns and everything upstream and downstream of '
        "it. Each box opens its page; the border colour is the owning team.</p>"
    )
    return "Lineage", join([form, note, draw(graph)]), []
