"""The lineage graph: nodes in columns by kind (stream → feature set → feature → model →
version → service), edges between them, every node a link to its page; filtered to what a
team owns and everything upstream and downstream of it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from headwater.ui.charts import PALETTE
from headwater.ui.html import Safe, esc

KINDS = ("stream", "feature set", "feature", "model", "version", "service")
COLUMN_W, NODE_W, NODE_H, ROW_H, TOP = 170, 150, 26, 34, 28


@dataclass(frozen=True)
class Node:
    kind: str
    name: str
    team: str
    href: str

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Lineage:
    nodes: Sequence[Node]
    edges: Sequence[tuple[str, str]]  # (from id, to id)

    def teams(self) -> list[str]:
        return sorted({n.team for n in self.nodes if n.team})

    def around(self, team: str) -> Lineage:
        """What ``team`` owns, with everything upstream and downstream of it.

        >>> g = Lineage([Node("stream", "s", "a", ""), Node("model", "m", "b", ""),
        ...              Node("model", "n", "c", "")], [("stream:s", "model:m")])
        >>> sorted(n.name for n in g.around("b").nodes)
        ['m', 's']
        """
        down, up = defaultdict(set), defaultdict(set)
        for a, b in self.edges:
            down[a].add(b)
            up[b].add(a)
        keep = {n.id for n in self.nodes if n.team == team}
        for links in (down, up):
            frontier = list(keep)
            seen = set(keep)
            while frontier:
                for nxt in links[frontier.pop()]:
                    if nxt not in seen:
                        seen.add(nxt)
                        frontier.append(nxt)
            keep |= seen
        return Lineage(
            [n for n in self.nodes if n.id in keep],
            [(a, b) for a, b in self.edges if a in keep and b in keep],
        )


def draw(graph: Lineage) -> Safe:
    """The graph as SVG: one column per kind, nodes sorted by name, curved edges."""
    columns: dict[str, list[Node]] = {kind: [] for kind in KINDS}
    for node in sorted(graph.nodes, key=lambda n: n.name):
        columns[node.kind].append(node)
    at: dict[str, tuple[float, float]] = {}
    for c, kind in enumerate(KINDS):
        for r, node in enumerate(columns[kind]):
            at[node.id] = (8 + c * COLUMN_W, TOP + r * ROW_H)
    rows = max((len(v) for v in columns.values()), default=0)
    width, height = 8 + COLUMN_W * len(KINDS), TOP + max(rows, 1) * ROW_H + 8
    teams = {team: PALETTE[i % len(PALETTE)] for i, team in enumerate(graph_teams(graph.nodes))}
    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'class="lineage" role="group" aria-label="Lineage graph">'
    ]
    for c, kind in enumerate(KINDS):
        parts.append(
            f'<text x="{8 + c * COLUMN_W}" y="16" class="axis">{esc(kind.capitalize())}s</text>'
        )
    for a, b in graph.edges:
        if a in at and b in at:
            (x1, y1), (x2, y2) = at[a], at[b]
            x1, y1, y2 = x1 + NODE_W, y1 + NODE_H / 2, y2 + NODE_H / 2
            mid = (x1 + x2) / 2
            parts.append(
                f'<path d="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} '
                f'{x2:.0f},{y2:.0f}" class="edge" data-from="{esc(a)}" data-to="{esc(b)}"/>'
            )
    for node in graph.nodes:
        x, y = at[node.id]
        label = node.name if len(node.name) <= 21 else node.name[:20] + "…"
        parts.append(
            f'<a href="{esc(node.href)}" class="node" data-node="{esc(node.id)}">'
            f"<title>{esc(node.kind)} {esc(node.name)} · team {esc(node.team)}</title>"
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="5" '
            f'style="stroke:{teams.get(node.team, "#555")}"/>'
            f'<text x="{x + 8}" y="{y + 17}">{esc(label)}</text></a>'
        )
    parts.append("</svg>")
    legend = "".join(
        f'<li><span class="swatch" style="background:{color}"></span>team {esc(team)}</li>'
        for team, color in teams.items()
    )
    return Safe(
        f'<div class="scroll-x">{"".join(parts)}</div><ul class="legend">{legend}</ul>'
        + _as_list(graph)
    )


def _as_list(graph: Lineage) -> str:
    """The edges as text, for screen readers and search: each node and what it feeds."""
    names = {n.id: n for n in graph.nodes}
    feeds: dict[str, list[str]] = defaultdict(list)
    for a, b in graph.edges:
        if a in names and b in names:
            feeds[a].append(b)
    rows = "".join(
        f'<li><a href="{esc(names[a].href)}">{esc(names[a].kind)} {esc(names[a].name)}</a>'
        " feeds "
        + ", ".join(f"{esc(names[b].kind)} {esc(names[b].name)}" for b in sorted(targets))
        + "</li>"
        for a, targets in sorted(feeds.items())
    )
    return f"<details><summary>The graph as a list</summary><ul>{rows}</ul></details>"


def graph_teams(nodes: Iterable[Node]) -> list[str]:
    return sorted({n.team for n in nodes if n.team})
