"""``train``, ``runs`` and ``models``: training pipelines, their runs, and the registry."""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from headwater.cli.common import (
    EnvOpt,
    ProjectOpt,
    TeamOpt,
    app,
    check_team,
    console,
    iso,
    open_project,
    print_segments,
)
from headwater.errors import HeadwaterError


@app.command()
def train(
    model: Annotated[str | None, typer.Argument(help="Model name")] = None,
    reproduce: Annotated[
        int | None, typer.Option(help="Rebuild the training data of this version from the log")
    ] = None,
    all_models: Annotated[
        bool, typer.Option("--all", help="Train every model (with --team: that team's)")
    ] = False,
    team: TeamOpt = None,
    jobs: Annotated[
        int, typer.Option(min=1, help="With --all: train in N processes at a time")
    ] = 1,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Run a model's training pipeline (cached steps are reused) and register a version;
    --all trains many models, building one training set for the models that learn from the
    same examples (one entity, its streams, the same sample times)."""
    if all_models or team is not None:
        if model is not None or reproduce is not None:
            raise typer.BadParameter("give a model, or --all [--team T], not both")
        _train_all(project, env, team, jobs)
        return
    if model is None:
        raise typer.BadParameter("give a model name, or --all", param_hint="MODEL")
    with open_project(project, env) as p:
        console.print(f"training {model}")
        result = p.train(model, reproduce=reproduce, log=console.print)
        doc = p.registry.version(model, result.version)
        original = None if reproduce is None else p.registry.version(model, reproduce)
    _print_metrics(doc)
    print_segments(doc.get("segments") or {}, "held-out")
    search = doc["lineage"].get("search")
    if search:
        console.print(
            f"search: best of {search['trials']} trials by {search['metric']} "
            f"({search['best']['value']:.4f}): {search['best']['params']}; "
            f"`headwater runs --compare {result.run['id']}` ranks them"
        )
    snapshot = doc["lineage"]["snapshot"]
    console.print(
        f"registered {model} version {result.version}: {snapshot['rows']:,} rows, "
        f"data hash {snapshot['data_hash']}"
    )
    if original is not None:
        expected = original["lineage"]["snapshot"]["data_hash"]
        same = expected == snapshot["data_hash"]
        console.print(
            f"reproduces version {reproduce}: data hash "
            f"{'identical' if same else 'DIFFERENT: ' + expected}"
        )
        if not same:
            raise typer.Exit(1)


def _train_all(project: Path, env: str | None, team: str | None, jobs: int) -> None:
    start = time.perf_counter()
    with open_project(project, env) as p:
        if team is not None:
            check_team(p, team)
        results = p.train_all(team=team, jobs=jobs, log=console.print)
    table = Table("model", "result", "data hash", "training set shared with", "seconds")
    for name, r in results.items():
        if isinstance(r, Exception):
            table.add_row(name, f"failed: {str(r).splitlines()[0][:80]}", "-", "-", "-")
            continue
        steps = r.run.get("steps") or []
        seconds = sum(step["seconds"] for step in steps)
        table.add_row(
            name,
            f"version {r.version}",
            r.run.get("data_hash", "-"),
            ", ".join(r.run.get("training_set_shared_with", [])) or "-",
            f"{seconds:.1f}",
        )
    console.print(table)
    failed = [n for n, r in results.items() if isinstance(r, Exception)]
    console.print(
        f"trained {len(results) - len(failed)} of {len(results)} models in "
        f"{time.perf_counter() - start:.1f}s ({jobs} at a time)"
    )
    if not results:
        raise HeadwaterError("no model to train" + (f" owned by {team!r}" if team else ""))
    if failed:
        raise typer.Exit(1)


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_metrics(doc: dict[str, Any]) -> None:
    others = doc["comparison"]
    table = Table(
        "metric",
        f"v{doc['version']}",
        *(f"{name} v{c['version']}" if name == "champion" else name for name, c in others.items()),
        title=f"{doc['model']}: held-out metrics ({doc['rows']['test']:,} rows)",
    )
    for metric, value in doc["metrics"].items():
        table.add_row(
            metric,
            f"{value:.4f}",
            *(_metric(c["metrics"].get(metric)) for c in others.values()),
        )
    console.print(table)
    if any(len(c["metrics"]) < len(doc["metrics"]) for c in others.values()):
        console.print("-: not computed (a score outside [0, 1] is not a probability)")
    top = sorted(doc["importance"].items(), key=lambda kv: -abs(kv[1]))[:5]
    console.print("top features: " + ", ".join(f"{k} ({v:.3f})" for k, v in top))


@app.command()
def runs(
    model: Annotated[
        str | None, typer.Argument(help="Only this model's runs; or `show` to show one run")
    ] = None,
    run: Annotated[str | None, typer.Argument(help="With `show`: the run id")] = None,
    compare: Annotated[
        list[str] | None,
        typer.Option(
            help="Run ids to compare side by side (repeatable); a search's run: its trials"
        ),
    ] = None,
    trials: Annotated[bool, typer.Option(help="List search trials too")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With `show`: the run record as JSON")
    ] = False,
    team: TeamOpt = None,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """List training runs with their status, duration, data and metrics; `runs show RUN`
    prints a run's DAG of steps (what each read, its status and time) and its search;
    --compare compares runs, or a search's trials (--team: the runs of that team's models)."""
    if model == "show":
        if run is None:
            raise typer.BadParameter("give the run id: headwater runs show RUN", param_hint="RUN")
        with open_project(project, env) as p:
            found = p.registry.run(run)
            children = p.registry.runs(found["model"]) if found.get("search") else []
        if as_json:
            typer.echo(json.dumps(found, indent=2, sort_keys=True, default=str))
            return
        _show_run(found, [c for c in children if c.get("parent") == run])
        return
    if run is not None:
        raise typer.BadParameter("a second argument is only for `runs show RUN`")
    with open_project(project, env) as p:
        if model is not None:
            p.definitions.model(model)  # an unknown name: "did you mean"
        records = p.registry.runs(model)
        if team is not None:
            check_team(p, team)
            mine = {n for n, m in p.definitions.models.items() if m.owner == team}
            records = [r for r in records if r["model"] in mine]
    if compare:
        chosen = [r for r in records if r["id"] in compare]
        if len(chosen) == 1 and chosen[0].get("search"):  # a search: its trials, best first
            _compare_trials(chosen[0], [r for r in records if r.get("parent") == chosen[0]["id"]])
            return
        _compare_runs(chosen)
        return
    table = Table("run", "model", "status", "started", "version", "seconds", "data hash", "metrics")
    hidden = 0
    for r in records:
        if r.get("kind") == "trial" and not trials:
            hidden += 1
            continue
        seconds = (r.get("ended_us", r["started_us"]) - r["started_us"]) / 1e6
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in (r.get("metrics") or {}).items())
        search = r.get("search")
        table.add_row(
            r["id"],
            r["model"],
            r["status"] if r.get("kind") != "trial" else f"trial ({r['status']})",
            iso(r["started_us"]),
            str(r.get("version", "-")),
            f"{seconds:.1f}",
            r.get("data_hash", "-"),
            (metrics or r.get("error", "")[:60])
            + (f" (search: {search['trials']} trials)" if search else ""),
        )
    console.print(table)
    if hidden:
        console.print(f"{hidden} search trials not shown: --trials lists them, "
                      "--compare RUN compares a search's trials")  # fmt: skip


def _show_run(run: dict[str, Any], trials: list[dict[str, Any]]) -> None:
    """A run's DAG: each step in the order it started, what it read and made, its status."""
    seconds = (run.get("ended_us", run["started_us"]) - run["started_us"]) / 1e6
    console.print(
        f"run {run['id']} of {run['model']}: {run['status']} in {seconds:.1f}s"
        + (f", version {run['version']}" if run.get("version") else "")
    )
    if run.get("error"):
        console.print(f"error: {run['error'].splitlines()[0]}")
    dag = {d["name"]: d for d in run.get("dag") or []}
    records = {s["name"]: s for s in run.get("steps") or []}
    table = Table("step", "kind", "reads", "makes", "status", "start s", "seconds", "attempts",
                  title="steps (a DAG: a step starts when what it reads is made)")  # fmt: skip
    order = sorted(dag, key=lambda n: records.get(n, {}).get("started", float("inf")))
    for name in [*order, *(n for n in records if n not in dag)]:
        node, rec = dag.get(name, {}), records.get(name, {})
        reads = ", ".join(
            p if ref == f"model.{p}" else f"{p} <- {ref.split('.')[0]}"
            for p, ref in (node.get("inputs") or {}).items()
        )
        table.add_row(
            name,
            "built-in" if node.get("builtin", True) else "yours",
            reads or "-",
            ", ".join(node.get("outputs") or []) or "-",
            rec.get("status", "not run") + (f": {rec['error'][:50]}" if rec.get("error") else ""),
            f"{rec.get('started', 0.0):.2f}" if rec else "-",
            f"{rec.get('seconds', 0.0):.2f}" if rec else "-",
            str(rec.get("attempts", "-")),
        )
    console.print(table)
    search = run.get("search")
    if search:
        best = search["best"]
        console.print(
            f"search: {search['trials']} trials ({search['failed']} failed, stopped by "
            f"{search['stopped_by']}); best {search['metric']} {best['value']:.4f} by trial "
            f"{best['trial']} with {best['params']}"
        )
        if trials:
            _compare_trials(run, trials)


def _compare_trials(run: dict[str, Any], trials: list[dict[str, Any]]) -> None:
    search = run["search"]
    metric, higher = search["metric"], search["direction"] == "maximize"
    done = [t for t in trials if t.get("metrics")]
    done.sort(key=lambda t: -t["metrics"][metric] if higher else t["metrics"][metric])
    names = list(search.get("space") or (done[0]["params"] if done else {}))
    table = Table("trial", metric, *names, "seconds", title=f"search of run {run['id']}")
    for t in [*done, *(t for t in trials if not t.get("metrics"))]:
        value = t.get("metrics", {}).get(metric)
        table.add_row(
            str(t["trial"]) + (" (best)" if t["id"] == search["best"]["run"] else ""),
            "failed" if value is None else f"{value:.4f}",
            *(str(t["params"].get(n, "-")) for n in names),
            f"{t.get('seconds', 0.0):.2f}",
        )
    console.print(table)


def _compare_runs(chosen: list[dict[str, Any]]) -> None:
    if not chosen:
        raise HeadwaterError("none of those run ids exist; `headwater runs` lists them")
    table = Table("", *(f"{r['model']} {r['id']}" for r in chosen), title="runs compared")
    rows: dict[str, list[str]] = {}
    for i, r in enumerate(chosen):
        flat = {
            "status": r["status"],
            "version": r.get("version", "-"),
            "data_hash": r.get("data_hash", "-"),
            "git": (r.get("code") or {}).get("git_commit") or "-",
            **{f"metric {k}": f"{v:.4f}" for k, v in (r.get("metrics") or {}).items()},
            **{f"param {k}": v for k, v in (r.get("params") or {}).items()},
        }
        for key, value in flat.items():
            rows.setdefault(key, ["-"] * len(chosen))[i] = str(value)
    for key, values in rows.items():
        table.add_row(key + ("" if len(set(values)) == 1 else " *"), *values)
    console.print(table)
    console.print("* differs between the runs")


models_app = typer.Typer(
    help="The model registry: list, show, promote, rollback.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(team: TeamOpt = None, project: ProjectOpt = Path("."), env: EnvOpt = None) -> None:
    """Every model with its versions and aliases (--team: that team's models)."""
    with open_project(project, env) as p:
        if team is not None:
            check_team(p, team)
        table = Table("model", "owner", "versions", "aliases")
        for name, m in sorted(p.definitions.models.items()):
            if team is not None and m.owner != team:
                continue
            versions = [d["version"] for d in p.registry.versions(name)]
            aliases = ", ".join(f"{a}=v{d['version']}" for a, d in p.registry.aliases(name).items())
            table.add_row(name, m.owner, ", ".join(map(str, versions)) or "-", aliases or "-")
    console.print(table)


@models_app.command("show")
def models_show(
    model: Annotated[str, typer.Argument()],
    version: Annotated[str, typer.Argument(help="A number or an alias")] = "champion",
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """A version's metrics, lineage and alias history."""
    with open_project(project, env) as p:
        p.definitions.model(model)  # an unknown name: "did you mean"
        doc = p.registry.version(model, version)
        aliases = p.registry.aliases(model)
    _print_metrics(doc)
    print_segments(doc.get("segments") or {}, "held-out")
    _print_lineage(doc)
    for alias, info in aliases.items():
        for h in info["history"]:
            previous = "" if h["previous"] is None else f"v{h['previous']} -> "
            console.print(
                f"{alias}: {h['action']} {previous}v{h['version']} at {iso(h.get('at_us'))} "
                f"by {h['by']}" + (f": {h['reason']}" if h["reason"] else "")
            )


def _print_lineage(doc: dict[str, Any]) -> None:
    lineage = doc["lineage"]
    snapshot = lineage["snapshot"]
    low, high = snapshot["sample_time_range_us"]
    label = lineage["label"]
    console.print(f"created {iso(doc.get('created_us'))} by run {doc.get('run', '-')}")
    console.print(
        f"label: {label['name']} (version {label['version']}); examples sampled from "
        f"{iso(low)} to {iso(high)}, held out from {iso(snapshot.get('test_from_us'))}"
    )
    offsets = ", ".join(f"{s} {o:,}" for s, o in snapshot["log"]["offsets"].items())
    console.print(
        f"data: {snapshot['rows']:,} rows, hash {snapshot['data_hash']}; the log as of "
        f"{iso(snapshot['log']['as_of_us'])} (offsets: {offsets})"
    )
    versions: dict[str, list[str]] = {}
    for feature, version in lineage["features"].items():
        versions.setdefault(version, []).append(feature)
    console.print(
        "features: "
        + "; ".join(f"{', '.join(names)} (version {v})" for v, names in versions.items())
    )
    if lineage.get("steps"):
        console.print("steps of the model's own: " + ", ".join(lineage["steps"]))
    search = lineage.get("search")
    if search:
        best = search["best"]
        console.print(
            f"search: best of {search['trials']} trials by {search['metric']} "
            f"({best['value']:.4f}, trial run {best['run']}): {best['params']}"
        )
    console.print(f"code: git commit {lineage['code'].get('git_commit') or 'unknown'}")
    console.print("packages: " + ", ".join(f"{k} {v}" for k, v in lineage["packages"].items()))
    console.print("artifacts: " + ", ".join(f"{k} {v}" for k, v in doc["artifacts"].items()))


@models_app.command("promote")
def models_promote(
    model: Annotated[str, typer.Argument()],
    version: Annotated[int, typer.Argument()],
    alias: Annotated[str, typer.Option(help="champion, challenger or any name")] = "champion",
    reason: Annotated[str, typer.Option(help="Why, for the alias history (required)")] = "",
    force: Annotated[bool, typer.Option(help="Skip the promotion policy")] = False,
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Point an alias at a version; "champion" must pass the model's promotion policy."""
    if not reason.strip():
        raise typer.BadParameter("say why, for the alias history", param_hint="--reason")
    with open_project(project, env) as p:
        p.promote(model, version, alias=alias, by=getpass.getuser(), reason=reason, force=force)
    console.print(f"{model}: {alias} -> version {version}")


@models_app.command("rollback")
def models_rollback(
    model: Annotated[str, typer.Argument()],
    alias: Annotated[str, typer.Option()] = "champion",
    reason: Annotated[str, typer.Option()] = "",
    project: ProjectOpt = Path("."),
    env: EnvOpt = None,
) -> None:
    """Point an alias back at its previous version."""
    with open_project(project, env) as p:
        version = p.rollback(model, alias=alias, by=getpass.getuser(), reason=reason)
    console.print(f"{model}: {alias} -> version {version} (rolled back)")
