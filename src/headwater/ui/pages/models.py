"""Models: every model with its champion; one model's versions with their metrics against the
baseline and the champion, its aliases and their history (who, why), each version's lineage,
importance, calibration and the steps of the run that made it; two versions side by side;
promotion and rollback where the key allows them."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from headwater.definitions import Model
from headwater.ui.charts import hbar_chart, line_chart
from headwater.ui.html import Safe, badge, esc, join, link, number, path, table, tag, when
from headwater.ui.html import facts as html_facts
from headwater.ui.page import DIALOG, Drawn, NotFound, Page, Panel, action_button, panels


def models(page: Page) -> Drawn:
    s = page.sources
    rows = []
    for name, model in sorted(s.definitions.models.items()):
        versions = s.registry.versions(name)
        aliases = s.registry.aliases(name)
        champion = aliases.get("champion", {}).get("version")
        metric = model.promotion.metric
        doc = next((v for v in versions if v["version"] == champion), None)
        baseline = (doc or {}).get("comparison", {}).get("baseline", {}).get("metrics", {})
        rows.append(
            [
                link(name, path("models", name)),
                model.owner,
                model.task,
                f"v{champion}" if champion else "none",
                join(badge(f"{a} v{d['version']}", "alias") for a, d in sorted(aliases.items())),
                number(len(versions)),
                f"{metric} {number((doc or {}).get('metrics', {}).get(metric))}",
                number(baseline.get(metric)),
            ]
        )
    head = ["Model", "Owner", "Task", "Champion", "Aliases", "Versions", "Champion's", "Baseline"]
    return "Models", table(head, rows), []


def model(page: Page, name: str) -> Drawn:
    found = page.sources.definitions.models.get(name)
    if found is None:
        raise NotFound(f"no model is named {name!r}")
    return name, join([panels(page, PANELS, found), DIALOG]), [("Models", "/ui/models")]


def about(page: Page, model: Model) -> Safe:
    policy = model.promotion
    facts = [
        ("Owner", model.owner),
        ("Description", model.description),
        ("Task", model.task),
        ("Label", f"{model.label.name} (stream {model.label.stream.name})"),
        ("Features", ", ".join(model.features)),
        (
            "Promotion policy",
            f"{policy.metric} {'≥' if policy.higher_is_better else '≤'} the champion's "
            f"{'-' if policy.higher_is_better else '+'} {policy.max_regression:g}"
            + (f", and at least {policy.minimum:g}" if policy.minimum is not None else ""),
        ),
    ]
    return html_facts(facts)


def versions(page: Page, model: Model) -> Safe:
    s = page.sources
    docs = s.registry.versions(model.name)
    aliases = s.registry.aliases(model.name)
    by_version: dict[int, list[str]] = {}
    for alias, doc in aliases.items():
        by_version.setdefault(int(doc["version"]), []).append(alias)
    metric = model.promotion.metric
    may = page.may("models:promote", model.name)
    rows = []
    for doc in reversed(docs):
        v = int(doc["version"])
        comparison = doc.get("comparison", {})
        champion = comparison.get("champion", {})
        rows.append(
            [
                Safe(f'<span id="v{v}">v{v}</span>'),
                when(doc.get("created_us")),
                join(badge(a, "alias") for a in sorted(by_version.get(v, []))),
                number(doc.get("metrics", {}).get(metric)),
                number(comparison.get("baseline", {}).get("metrics", {}).get(metric)),
                (
                    f"v{champion['version']}: {number(champion.get('metrics', {}).get(metric))}"
                    if champion
                    else "–"
                ),
                number(doc.get("rows", {}).get("train")),
                _promote(model, v, by_version.get(v, [])) if may else "",
            ]
        )
    head = [
        "Version",
        "Registered",
        "Aliases",
        metric,
        f"Baseline {metric}",
        f"Champion's {metric} on the same rows",
        "Training rows",
        "",
    ]
    compare = _compare_form(model, docs)
    return join([table(head, rows), compare])


def _promote(model: Model, version: int, aliases: list[str]) -> Safe:
    if "champion" in aliases:
        return Safe("")
    url = _alias_url(model.name, "champion")
    return action_button(
        "Promote to champion",
        f"Promote {model.name} v{version} to champion",
        url,
        {"version": version},
    )


def _compare_form(model: Model, docs: list[dict[str, Any]]) -> Safe:
    if len(docs) < 2:
        return Safe("")
    numbers = [int(d["version"]) for d in docs]

    def options(chosen: int) -> str:
        return "".join(
            f'<option value="{n}"{" selected" if n == chosen else ""}>v{n}</option>'
            for n in numbers
        )

    return Safe(
        f'<form class="filters" method="get" action="{esc(path("models", model.name, "compare"))}">'
        f'<div><label for="a">Compare</label><br><select id="a" name="a">{options(numbers[-2])}'
        f'</select></div><div><label for="b">with</label><br><select id="b" name="b">'
        f"{options(numbers[-1])}</select></div>"
        '<div><button type="submit">Side by side</button></div></form>'
    )


def aliases(page: Page, model: Model) -> Safe:
    found = page.sources.registry.aliases(model.name)
    may = page.may("models:promote", model.name)
    current = [
        [badge(alias, "alias"), f"v{doc['version']}", _rollback(model, alias, doc) if may else ""]
        for alias, doc in sorted(found.items())
    ]
    changes = sorted(
        ((h, alias) for alias, doc in found.items() for h in doc.get("history", [])),
        key=lambda pair: -int(pair[0].get("at_us") or 0),
    )
    history = [
        [
            when(h.get("at_us")),
            badge(alias, "alias"),
            h.get("action", ""),
            f"v{h['previous']} → v{h['version']}" if h.get("previous") else f"v{h['version']}",
            h.get("by", ""),
            h.get("reason", ""),
        ]
        for h, alias in changes
    ]
    return join(
        [
            table(["Alias", "Version", ""], current),
            Safe("<h3>History</h3>"),
            table(["When", "Alias", "Action", "Version", "By", "Why"], history),
        ]
    )


def _rollback(model: Model, alias: str, doc: dict[str, Any]) -> Safe | str:
    """Back to the version before the alias's latest change, named in the button and the
    dialog (a second rollback would undo the first: the page says where each one goes)."""
    history = doc.get("history", [])
    previous = history[-1].get("previous") if history else None
    if previous is None:
        return ""
    return action_button(
        f"Roll back {alias} to v{previous}",
        f"Roll {model.name}'s {alias} back from v{doc['version']} to v{previous}",
        _alias_url(model.name, alias),
        {"rollback": True},
    )


def _alias_url(model: str, alias: str) -> str:
    return "/v1/models/" + quote(model, safe="") + "/aliases/" + quote(alias, safe="")


def latest(page: Page, model: Model) -> Safe:
    """The chosen version's lineage, importance, calibration and run (the champion's, or the
    newest version's)."""
    s = page.sources
    docs = s.registry.versions(model.name)
    if not docs:
        return Safe("<p>No version yet: <code>headwater train " + esc(model.name) + "</code>.</p>")
    champion = s.registry.alias(model.name, "champion")
    doc = next((d for d in docs if d["version"] == champion), docs[-1])
    return join([tag("p", f"Version v{doc['version']}", class_="muted"), version_detail(page, doc)])


def version_detail(page: Page, doc: dict[str, Any]) -> Safe:
    return join(
        [
            Safe("<h3>Lineage</h3>"),
            _lineage(doc),
            Safe("<h3>Importance</h3>"),
            _importance(doc),
            Safe("<h3>Calibration</h3>"),
            _calibration(doc),
            Safe("<h3>Segments (held-out rows)</h3>"),
            _segments(doc),
            Safe("<h3>The run's steps</h3>"),
            _steps(page, doc),
        ]
    )


def _lineage(doc: dict[str, Any]) -> Safe:
    lineage = doc.get("lineage", {})
    snapshot = lineage.get("snapshot", {})
    offsets = snapshot.get("log", {}).get("offsets", {})
    facts = [
        ("Definition version", lineage.get("definition_version", "–")),
        (
            "Label",
            f"{lineage.get('label', {}).get('name', '–')} "
            f"({lineage.get('label', {}).get('version', '–')})",
        ),
        (
            "Training data",
            f"{number(snapshot.get('rows'))} rows, hash {snapshot.get('data_hash', '–')}",
        ),
        ("Log snapshot", ", ".join(f"{k} < {v:,}" for k, v in sorted(offsets.items())) or "–"),
        ("As of", when(snapshot.get("log", {}).get("as_of_us"))),
        ("Code", lineage.get("code", {}).get("git_commit") or "not in a git repository"),
        ("Packages", ", ".join(f"{k} {v}" for k, v in sorted(lineage.get("packages", {}).items()))),
    ]
    features = table(["Feature", "Version"], sorted(lineage.get("features", {}).items()))
    return join(
        [
            html_facts(facts),
            Safe("<details><summary>Feature versions</summary>"),
            features,
            Safe("</details>"),
        ]
    )


def _importance(doc: dict[str, Any]) -> Safe:
    found = sorted(doc.get("importance", {}).items(), key=lambda kv: -kv[1])[:15]
    return hbar_chart(
        [(k, float(v)) for k, v in found],
        caption=f"v{doc['version']}: the 15 most important features (mean |contribution| "
        "for LightGBM, permutation importance otherwise, on held-out rows)",
        x_label="importance",
    )


def _calibration(doc: dict[str, Any]) -> Safe:
    bins = doc.get("calibration") or []
    if not bins:
        return Safe("<p>Not a classifier: no calibration.</p>")
    labels = [f"{b['predicted']:.3f}" for b in bins]
    return line_chart(
        {
            "observed rate": list(zip(labels, [b["observed"] for b in bins], strict=True)),
            "perfect": list(zip(labels, [b["predicted"] for b in bins], strict=True)),
        },
        caption=f"v{doc['version']}: observed positive rate per bin of predicted probability "
        "(held-out rows); on the diagonal is perfect",
        y_label="observed",
    )


def _steps(page: Page, doc: dict[str, Any]) -> Safe:
    """The run's DAG: each step with what it read (and from which step), its status and a
    timeline of when it ran (steps side by side ran in parallel); the search's trials."""
    runs = page.sources.registry.runs(doc["model"])
    run = next((r for r in runs if r.get("version") == doc["version"]), None)
    if run is None:
        return Safe("<p>No run recorded.</p>")
    steps = sorted(run.get("steps", []), key=lambda st: st.get("started", 0.0))
    dag = {d["name"]: d for d in run.get("dag") or []}
    rows = []
    for st in steps:
        node = dag.get(st["name"], {})
        reads = ", ".join(
            p if ref == f"model.{p}" else f"{p} ← {ref.split('.')[0]}"
            for p, ref in (node.get("inputs") or {}).items()
        )
        rows.append(
            [
                st["name"],
                "built-in" if node.get("builtin", True) else "yours",
                reads or "–",
                st.get("status", ""),
                f"{st.get('started', 0.0):.2f} s",
                f"{st.get('seconds', 0):.3f} s",
                st.get("attempts", 1),
            ]
        )
    parts = [
        table(["Step", "Kind", "Reads", "Status", "Start", "Duration", "Attempts"], rows),
        _timeline(run["id"], steps),
    ]
    search = run.get("search")
    if search:
        trials = [r for r in runs if r.get("parent") == run["id"]]
        metric = search["metric"]
        trials.sort(key=lambda t: (t.get("metrics") or {}).get(metric, float("nan")),
                    reverse=search["direction"] == "maximize")  # fmt: skip
        names = list(search.get("space") or {})
        parts.append(
            Safe(
                f"<h3>Search: {search['trials']} trials by {esc(metric)}, best trial "
                f"{search['best']['trial']} ({search['best']['value']:.4f})</h3>"
            )
        )
        parts.append(
            table(
                ["Trial", metric, *names],
                [
                    [
                        t["trial"],
                        "failed" if not t.get("metrics") else f"{t['metrics'][metric]:.4f}",
                        *(t["params"].get(n, "–") for n in names),
                    ]
                    for t in trials
                ],
            )
        )
    return join(parts)


def _timeline(run_id: str, steps: list[dict[str, Any]]) -> Safe:
    """Each step as a bar from its start to its end: bars that overlap ran in parallel."""
    end = max((st.get("started", 0.0) + st.get("seconds", 0.0) for st in steps), default=0.0)
    width, label_w, row = 520, 120, 18
    scale = (width - label_w - 10) / (end or 1.0)
    bars = []
    for i, st in enumerate(steps):
        x = label_w + st.get("started", 0.0) * scale
        w = max(1.0, st.get("seconds", 0.0) * scale)
        y = i * row + 2
        bars.append(
            f'<text x="0" y="{y + 12}" font-size="11">{esc(st["name"])}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 4}" '
            f'class="{"bad" if st.get("status") == "failed" else "bar"}">'
            f"<title>{esc(st['name'])}: {st.get('started', 0.0):.2f}–"
            f"{st.get('started', 0.0) + st.get('seconds', 0.0):.2f} s</title></rect>"
        )
    height = row * len(steps) + 4
    return Safe(
        f'<figure><svg class="timeline" width="{width}" height="{height}" role="img" '
        f'aria-label="when each step ran">{"".join(bars)}</svg>'
        f"<figcaption>Run {esc(run_id)}: when each step ran ({end:.2f} s in all); overlapping "
        "bars ran in parallel</figcaption></figure>"
    )


def _segments(doc: dict[str, Any]) -> Safe:
    found = doc.get("segments") or {}
    if not found:
        return Safe("<p>No segments declared (<code>Model(segments=[...])</code>).</p>")
    parts = []
    for name, seg in found.items():
        metric, gap = seg["metric"], seg["gap"]
        parts.append(
            table(
                [name, "Rows", metric, "Positive rate", "Predicted", "Calibration"],
                [
                    [
                        group + (" (few rows)" if g["rows"] < seg["min_rows"] else ""),
                        number(g["rows"]),
                        "–" if g.get(metric) is None else f"{g[metric]:.4f}",
                        f"{g['positive_rate']:.3f}",
                        f"{g['predicted_rate']:.3f}",
                        f"{g['calibration']:+.3f}",
                    ]
                    for group, g in seg["groups"].items()
                ],
            )
        )
        if gap:
            low, high = gap["between"]
            parts.append(tag("p", f"Largest gap in {metric}: {gap['value']:.4f} ({low} vs {high})"))
    return join(parts)


def compare(page: Page, name: str) -> Drawn:
    s = page.sources
    model = s.definitions.models.get(name)
    if model is None:
        raise NotFound(f"no model is named {name!r}")
    docs = {int(d["version"]): d for d in s.registry.versions(name)}
    try:
        a, b = int(page.query.get("a", "0")), int(page.query.get("b", "0"))
    except ValueError as exc:
        raise NotFound("give two version numbers: ?a=1&b=2") from exc
    if a not in docs or b not in docs:
        raise NotFound(f"model {name!r} has versions {sorted(docs)}; pick two of them")
    left, right = docs[a], docs[b]
    metrics = sorted(set(left.get("metrics", {})) | set(right.get("metrics", {})))
    rows = [
        [
            m,
            number(left["metrics"].get(m)),
            number(right["metrics"].get(m)),
            _delta(left["metrics"].get(m), right["metrics"].get(m)),
        ]
        for m in metrics
    ]
    feats_a, feats_b = (
        left.get("lineage", {}).get("features", {}),
        right.get("lineage", {}).get("features", {}),
    )
    changed = [
        [f, feats_a.get(f, "–"), feats_b.get(f, "–")]
        for f in sorted(set(feats_a) | set(feats_b))
        if feats_a.get(f) != feats_b.get(f)
    ]
    facts = [
        ["Registered", when(left.get("created_us")), when(right.get("created_us")), ""],
        [
            "Training rows",
            number(left.get("rows", {}).get("train")),
            number(right.get("rows", {}).get("train")),
            "",
        ],
        [
            "Data hash",
            left.get("lineage", {}).get("snapshot", {}).get("data_hash", "–"),
            right.get("lineage", {}).get("snapshot", {}).get("data_hash", "–"),
            "",
        ],
    ]
    body = join(
        [
            table(
                ["", f"v{a}", f"v{b}", "Change"],
                facts + rows,
                caption="Metrics on each version's held-out rows",
            ),
            Safe("<h2>Feature versions that differ</h2>"),
            table(["Feature", f"v{a}", f"v{b}"], changed)
            if changed
            else Safe("<p>The same feature definitions.</p>"),
            Safe(f'<div class="grid2"><div><h2>v{a}</h2>'),
            _importance(left),
            Safe(f"</div><div><h2>v{b}</h2>"),
            _importance(right),
            Safe("</div></div>"),
        ]
    )
    crumbs = [("Models", "/ui/models"), (name, path("models", name))]
    return f"{name}: v{a} and v{b}", body, crumbs


def _delta(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return ""
    return f"{b - a:+.4g}"


PANELS = [
    Panel("About", about),
    Panel("Versions", versions),
    Panel("Aliases", aliases),
    Panel("The champion in detail", latest),
]
