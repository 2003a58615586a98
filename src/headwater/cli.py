"""The ``headwater`` command line: one verb per operation of a project."""

from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from headwater.errors import HeadwaterError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="headwater: raw events in; features, training sets and models out.",
)
# Piped output (CI, files) gets room for tables instead of rich's 80-column default.
console = Console() if sys.stdout.isatty() else Console(width=130)
err = Console(stderr=True, soft_wrap=True)
_NUMBER = re.compile(r"-?\d+(\.\d*)?")  # epoch seconds on the command line

ProjectOpt = Annotated[
    Path, typer.Option("--project", "-p", help="Project folder", envvar="HEADWATER_PROJECT")
]


def _open(path: Path):  # type: ignore[no-untyped-def]
    from headwater.project.project import Project

    return Project(path)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Where to create the project")] = Path("."),
    example: Annotated[str, typer.Option(help="Start from an example project")] = "shop",
) -> None:
    """Create a project folder from an example (headwater.toml and definitions)."""
    source = Path(__file__).parent / "examples" / example
    if not source.is_dir():
        raise HeadwaterError(f"no example named {example!r}")
    if (folder / "headwater.toml").exists():
        raise HeadwaterError(f"{folder} already holds a project (headwater.toml)")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("headwater.toml", "definitions.py"):
        shutil.copy(source / name, folder / name)
    console.print(f"created project in {folder}; next: headwater plan -p {folder}")


def _print_plan(plan, title: str) -> None:  # type: ignore[no-untyped-def]
    table = Table(title=title)
    for column in ("change", "kind", "name", "version", "detail"):
        table.add_column(column)
    for c in plan.pending:
        version = f"{c.old_version or ''} -> {c.new_version or ''}".strip(" ->")
        table.add_row(c.action, c.kind, c.name, version, c.detail)
    console.print(table if plan.pending else f"{title}: nothing to change")
    console.print(", ".join(f"{n} {a}" for a, n in sorted(plan.summary().items())))
    for reason in plan.refused:
        err.print(f"[red]refused:[/red] {reason}")


@app.command()
def plan(project: ProjectOpt = Path(".")) -> None:
    """Show what `apply` would change: added, changed, updated, deprecated, removed."""
    with _open(project) as p:
        result = p.plan()
        _print_plan(result, "plan")
        if result.refused:
            raise typer.Exit(1)


@app.command()
def apply(project: ProjectOpt = Path(".")) -> None:
    """Register the definitions in the metadata store, with content-hash versions."""
    with _open(project) as p:
        _print_plan(p.apply(), "applied")


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="Events: .jsonl, .csv or .parquet")],
    stream: Annotated[str, typer.Option("--stream", "-s", help="Stream to append to")],
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl, csv or parquet")] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Validate and append the events of a file; rejected ones go to the dead-letter stream."""
    from headwater.ingestion.files import count_events, file_format, read_batches

    fmt = file_format(file, fmt)
    accepted = duplicates = rejected = 0
    with _open(project) as p, _progress() as bar:
        p.ingestor.stream(stream)
        task = bar.add_task(f"ingest {file.name}", total=count_events(file, fmt))
        for batch in read_batches(file, fmt):
            result = p.ingest(stream, batch)
            accepted += result.accepted
            duplicates += result.duplicates
            rejected += len(result.rejected)
            for r in result.rejected[:3]:
                err.print(f"[yellow]rejected[/yellow] event {r.index}: {r.reason}")
            bar.advance(task, len(batch))
    console.print(
        f"{accepted} accepted, {duplicates} duplicates, {rejected} rejected "
        f"(see stream _dead_letter)"
    )
    if rejected and not accepted:
        raise typer.Exit(1)


@app.command()
def process(
    forever: Annotated[bool, typer.Option(help="Keep processing new events")] = False,
    workers: Annotated[
        int, typer.Option(help="With --forever: worker processes sharing the log's partitions")
    ] = 1,
    group: Annotated[
        str | None,
        typer.Option(
            help="With --forever on Kafka: the consumer group whose members share the "
            "partitions (default: headwater.<project name>.processor)"
        ),
    ] = None,
    rebuild: Annotated[
        bool,
        typer.Option(help="First clear the feature sets' online state, then replay the whole log"),
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Log records read and applied at a time")] = (
        100_000
    ),
    commit_seconds: Annotated[
        float,
        typer.Option(
            help="Behind a backlog, commit each partition's states and checkpoints this often "
            "(a batch that finds the partition caught up is committed at once); 0: every batch"
        ),
    ] = 5.0,
    cached_states: Annotated[
        int,
        typer.Option(
            help="Decoded entity states kept in memory between batches, uncommitted ones "
            "included (a partition with more uncommitted states commits)"
        ),
    ] = 200_000,
    project: ProjectOpt = Path("."),
) -> None:
    """Update the online store from the log, from each feature set's checkpoint."""
    import signal
    import threading

    if batch_size < 1 or commit_seconds < 0 or cached_states < 0:
        raise HeadwaterError(
            "--batch-size must be at least 1, --commit-seconds and --cached-states at least 0"
        )
    with _open(project) as p:
        p.processor.batch_size = batch_size
        p.processor.commit_seconds = commit_seconds
        p.processor.cached_states = cached_states
        if forever:
            stop = threading.Event()

            def interrupted(*_: object) -> None:
                if stop.is_set():
                    raise KeyboardInterrupt  # a second Ctrl-C: quit now, uncommitted work replays
                stop.set()
                console.print("stopping after the batch in flight, committing what was processed")

            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, interrupted)
            console.print("processing; Ctrl-C to stop (twice to quit at once)")
            try:
                p.process(forever=True, stop=stop, workers=workers, group=group, rebuild=rebuild)
            except KeyboardInterrupt:
                stop.set()
            return
        if workers != 1 or group is not None:
            raise HeadwaterError("--workers and --group share --forever processing; add --forever")
        if rebuild:
            p.processor.clear()
            console.print("cleared the online state of the feature sets; replaying the log")
        lag = sum(p.processor.lag().values())
        start = time.perf_counter()
        with _progress() as bar:
            task = bar.add_task("process", total=lag)
            stats = p.process(progress=lambda n: bar.advance(task, n))
        seconds = time.perf_counter() - start
        console.print(f"processed {stats.events} events in {seconds:.2f}s")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: 127.0.0.1 (loopback)")] = None,
    port: Annotated[int | None, typer.Option(help="Default: from headwater.toml, 8800")] = None,
    with_processor: Annotated[
        bool, typer.Option("--with-processor", help="Also run the stream processor in this process")
    ] = False,
    with_scoring: Annotated[
        bool, typer.Option("--with-scoring", help="Also score the trigger streams of services")
    ] = False,
    log_predictions: Annotated[
        bool,
        typer.Option("--log-predictions", help="Write one JSON log line per prediction to stderr"),
    ] = False,
    monitor_every: Annotated[
        float,
        typer.Option(help="Run the monitor every N seconds and export it on /metrics (0: off)"),
    ] = 0,
    project: ProjectOpt = Path("."),
) -> None:
    """Start the HTTP API (OpenAPI docs at /docs)."""
    import gc
    import logging
    import threading

    import uvicorn

    from headwater.serving import log_format as logs
    from headwater.serving.http.app import create_app

    logs.configure(logging.INFO if log_predictions else logging.WARNING)
    p = _open(project)
    stop = threading.Event()
    if with_processor:
        threading.Thread(
            target=p.process, kwargs={"forever": True, "stop": stop}, daemon=True
        ).start()
    if with_scoring:
        threading.Thread(target=p.serving.run_stream_scoring, args=(stop,), daemon=True).start()
    server_app = create_app(p)
    if monitor_every > 0:
        threading.Thread(
            target=_monitor_loop, args=(p, server_app, monitor_every, stop), daemon=True
        ).start()
    # Latency: loaded objects leave the collector's generations (gen-2 passes over them cost
    # milliseconds), and the logger and shadow threads hand the GIL back sooner.
    gc.collect()
    gc.freeze()
    p.online.freeze_cached_states = True  # and so are the decoded states it caches later
    sys.setswitchinterval(0.001)
    try:
        uvicorn.run(
            server_app,
            host=host or p.settings.server.host,
            port=port or p.settings.server.port,
            log_level="warning",
        )
    finally:
        stop.set()
        p.close()


def _monitor_loop(p, server_app, every: float, stop) -> None:  # type: ignore[no-untyped-def]
    import logging

    from headwater.monitoring.monitor import Monitor

    while not stop.wait(every):
        try:
            server_app.state.metrics.record_monitor(Monitor(p).run())
        except Exception:  # noqa: BLE001 - the server keeps serving; the failure is logged
            logging.getLogger("headwater.monitor").exception("monitor run failed")


@app.command()
def features(
    keys: Annotated[list[str], typer.Argument(help="Entity keys as name=value")],
    names: Annotated[str, typer.Option("--features", "-f", help="Comma-separated names")],
    project: ProjectOpt = Path("."),
) -> None:
    """Print online feature values for one entity, e.g. `headwater features user_id=u1 -f x`."""
    row = dict(k.split("=", 1) for k in keys if "=" in k)
    with _open(project) as p:
        values = p.online_features(row, [n.strip() for n in names.split(",") if n.strip()])
    table = Table("feature", "value")
    for name, value in values.items():
        table.add_row(name, repr(value))
    console.print(table)


@app.command("training-set")
def training_set(
    spine: Annotated[Path, typer.Argument(help="Spine: .parquet or .csv with keys and times")],
    names: Annotated[str, typer.Option("--features", "-f", help="Comma-separated names")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .parquet or .csv")],
    time_column: Annotated[str, typer.Option(help="The spine's time column")] = "timestamp",
    project: ProjectOpt = Path("."),
) -> None:
    """Build a point-in-time-correct training set for a spine file."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    table = pq.read_table(spine) if spine.suffix == ".parquet" else pcsv.read_csv(spine)
    start = time.perf_counter()
    with _open(project) as p:
        result = p.training_set(
            table, [n.strip() for n in names.split(",")], time_column=time_column, output="arrow"
        )
    if out.suffix == ".csv":
        pcsv.write_csv(result, out)
    else:
        pq.write_table(result, out)
    console.print(
        f"{result.num_rows} rows x {result.num_columns} columns -> {out} "
        f"in {time.perf_counter() - start:.2f}s"
    )


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Model name")],
    reproduce: Annotated[
        int | None, typer.Option(help="Rebuild the training data of this version from the log")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Run a model's training pipeline (cached steps are reused) and register a version."""
    with _open(project) as p:
        console.print(f"training {model}")
        result = p.train(model, reproduce=reproduce, log=console.print)
        doc = p.registry.version(model, result.version)
        original = None if reproduce is None else p.registry.version(model, reproduce)
    _print_metrics(doc)
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


def _print_metrics(doc: dict) -> None:  # type: ignore[type-arg]
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
            *(f"{c['metrics'].get(metric, float('nan')):.4f}" for c in others.values()),
        )
    console.print(table)
    top = sorted(doc["importance"].items(), key=lambda kv: -abs(kv[1]))[:5]
    console.print("top features: " + ", ".join(f"{k} ({v:.3f})" for k, v in top))


@app.command()
def runs(
    model: Annotated[str | None, typer.Argument(help="Only this model's runs")] = None,
    compare: Annotated[
        list[str] | None, typer.Option(help="Run ids to compare side by side (repeatable)")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """List training runs with their status, duration, data and metrics, or compare runs."""
    with _open(project) as p:
        records = p.registry.runs(model)
    if compare:
        _compare_runs([r for r in records if r["id"] in compare])
        return
    table = Table("run", "model", "status", "version", "seconds", "rows/hash", "metrics")
    for r in records:
        seconds = (r.get("ended_us", r["started_us"]) - r["started_us"]) / 1e6
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in (r.get("metrics") or {}).items())
        table.add_row(
            r["id"],
            r["model"],
            r["status"],
            str(r.get("version", "-")),
            f"{seconds:.1f}",
            r.get("data_hash", "-"),
            metrics or r.get("error", "")[:60],
        )
    console.print(table)


def _compare_runs(chosen: list[dict]) -> None:  # type: ignore[type-arg]
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
def models_list(project: ProjectOpt = Path(".")) -> None:
    """Every model with its versions and aliases."""
    with _open(project) as p:
        table = Table("model", "owner", "versions", "aliases")
        for name, m in sorted(p.definitions.models.items()):
            versions = [d["version"] for d in p.registry.versions(name)]
            aliases = ", ".join(f"{a}=v{d['version']}" for a, d in p.registry.aliases(name).items())
            table.add_row(name, m.owner, ", ".join(map(str, versions)) or "-", aliases or "-")
    console.print(table)


@models_app.command("show")
def models_show(
    model: Annotated[str, typer.Argument()],
    version: Annotated[str, typer.Argument(help="A number or an alias")] = "champion",
    project: ProjectOpt = Path("."),
) -> None:
    """A version's metrics, lineage and alias history."""
    with _open(project) as p:
        doc = p.registry.version(model, version)
        aliases = p.registry.aliases(model)
    _print_metrics(doc)
    lineage = doc["lineage"]
    for key in ("label", "snapshot", "code", "packages", "features"):
        console.print(f"{key}: {lineage[key]}")
    console.print(f"artifacts: {doc['artifacts']}")
    for alias, info in aliases.items():
        for h in info["history"]:
            console.print(
                f"{alias}: {h['action']} v{h['previous']} -> v{h['version']} by "
                f"{h['by']}: {h['reason']}"
            )


@models_app.command("promote")
def models_promote(
    model: Annotated[str, typer.Argument()],
    version: Annotated[int, typer.Argument()],
    alias: Annotated[str, typer.Option(help="champion, challenger or any name")] = "champion",
    reason: Annotated[str, typer.Option(help="Why, for the history")] = "",
    force: Annotated[bool, typer.Option(help="Skip the promotion policy")] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Point an alias at a version; "champion" must pass the model's promotion policy."""
    import getpass

    with _open(project) as p:
        p.promote(model, version, alias=alias, by=getpass.getuser(), reason=reason, force=force)
    console.print(f"{model}: {alias} -> version {version}")


@models_app.command("rollback")
def models_rollback(
    model: Annotated[str, typer.Argument()],
    alias: Annotated[str, typer.Option()] = "champion",
    reason: Annotated[str, typer.Option()] = "",
    project: ProjectOpt = Path("."),
) -> None:
    """Point an alias back at its previous version."""
    import getpass

    with _open(project) as p:
        version = p.registry.rollback(model, alias, getpass.getuser(), reason, p.now())
    console.print(f"{model}: {alias} -> version {version} (rolled back)")


@app.command()
def describe(
    name: Annotated[str, typer.Argument(help="A stream or a feature")],
    sample: Annotated[int, typer.Option(help="Entities x times sampled for a feature")] = 2000,
    project: ProjectOpt = Path("."),
) -> None:
    """Summary statistics, null rates and a text histogram of a stream or a feature."""
    from headwater.history.describe import (
        describe_copies,
        describe_stream,
        describe_values,
        histogram,
    )

    with _open(project) as p:
        if name in p.definitions.streams:
            stream = p.definitions.streams[name]
            p.archiver.catch_up(stream)
            frame = describe_stream(stream, p.offline_store)
            console.print(f"stream {name} (owner {stream.owner}): {stream.description}")
            console.print(frame.to_string(index=False))
            for line in describe_copies(p.offline_store, stream, p.archiver.sorted_keys(stream)):
                console.print(line)
            return
        values = p.describe_feature(name, sample)
    stats = describe_values(values)
    console.print(
        f"feature {name} over {stats['count']:,} sampled (entity, time) rows: "
        + ", ".join(f"{k}={v}" for k, v in stats.items() if k != "count")
    )
    for line in histogram(values):
        console.print(line)


@app.command()
def scheduler(
    once: Annotated[bool, typer.Option(help="Run what is due now, then exit")] = False,
    every: Annotated[float, typer.Option(help="Seconds between checks")] = 60.0,
    project: ProjectOpt = Path("."),
) -> None:
    """Run the training pipelines of models, and the batch scoring of services, whose cron
    schedule is due."""
    from headwater.training.scheduler import run_due, run_due_scoring

    with _open(project) as p:
        while True:
            for name, outcome in run_due(p, console.print):
                console.print(f"{name}: {outcome}")
            for name, outcome in run_due_scoring(p, console.print):
                console.print(
                    f"{name}: {outcome} scored"
                    if isinstance(outcome, int)
                    else f"{name}: {outcome}"
                )
            if once:
                return
            time.sleep(every)


def _time_option(value: str, option: str) -> int:
    """A time given on the command line (ISO 8601, or epoch seconds), in microseconds; a
    usage error naming the option otherwise."""
    from headwater.definitions.types import InvalidValue, to_micros

    try:
        return to_micros(float(value) if _NUMBER.fullmatch(value.strip()) else value)
    except InvalidValue as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


@app.command()
def score(
    service: Annotated[str, typer.Argument(help="Service to score with")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .parquet or .csv")],
    entities: Annotated[
        Path | None,
        typer.Option(
            help="A .csv or .parquet of entity keys (and optionally times); default: every entity"
        ),
    ] = None,
    at: Annotated[str | None, typer.Option(help="Score as of this ISO time (default: now)")] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Batch scoring: features from the offline store as of a time, every prediction logged."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from headwater.definitions.types import from_micros
    from headwater.serving.batch_scoring import score_entities, write_scores

    at_us = None if at is None else _time_option(at, "--at")
    with _open(project) as p:
        when = from_micros(at_us if at_us is not None else p.now())
        table = None
        if entities is not None:
            table = (
                pq.read_table(entities)
                if entities.suffix == ".parquet"
                else pcsv.read_csv(entities)
            ).to_pandas()
        start = time.perf_counter()
        with _progress() as bar:
            task = bar.add_task(f"score {service}", total=None)
            result = score_entities(p, service, when, table, lambda n: bar.advance(task, n))
    write_scores(result, out)
    console.print(
        f"scored {len(result):,} entities in {time.perf_counter() - start:.1f}s -> "
        f"{out}; predictions logged to the 'predictions' stream"
    )


@app.command()
def monitor(
    service: Annotated[str | None, typer.Argument(help="Only this service")] = None,
    days: Annotated[float, typer.Option(help="Window of prediction times, back from now")] = 7,
    webhook: Annotated[str | None, typer.Option(help="POST each alert as JSON here")] = None,
    act: Annotated[
        bool,
        typer.Option(
            "--act", help="Retrain models whose policy says so; promote challengers that win"
        ),
    ] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Join logged predictions with their ground truth; drift against reference; alerts.

    The monitor's ledger consumes the log from its checkpoints first (a kill at any point
    resumes without counting anything twice), then the window is reported: per version, and
    per day from the ledger's daily aggregates."""
    import logging

    from headwater.definitions.types import from_micros
    from headwater.monitoring.ledger import DAY_US, Ledger
    from headwater.monitoring.monitor import Monitor
    from headwater.serving import log_format as logs

    logs.configure(logging.WARNING)
    alert_log = logging.getLogger("headwater.monitor")

    def send(alert: dict) -> None:  # type: ignore[type-arg]
        alert_log.warning("alert", extra=alert)
        if webhook:
            import httpx

            try:
                httpx.post(webhook, json=alert, timeout=5)
            except httpx.HTTPError as exc:
                alert_log.error("webhook failed", extra={"error": str(exc)})

    with _open(project) as p:
        now = p.now()
        since = now - int(days * 86_400e6)
        ledger = Ledger(p)
        with _progress() as bar:
            task = bar.add_task("monitor ledger", total=None)
            done = ledger.advance(now, lambda d: bar.update(task, completed=d.consumed))
        console.print(
            f"ledger: {done.predictions:,} predictions, {done.feedback:,} feedback events and "
            f"{done.matured:,} matured labels consumed in {done.seconds:.2f}s "
            f"({done.per_second:,.0f}/s)"
        )
        watcher = Monitor(p, alert=send)
        reports = watcher.run(service, since_us=since)
        daily = ledger.performance(since, now + 1, service)
        skews = {
            name: watcher.skew(name, since, now + 1)
            for name in sorted({r.service for r in reports})
        }
        if act:
            from headwater.monitoring import loop

            for action in [
                *loop.retrain_if_needed(p, reports, console.print),
                *loop.promote_winners(p, since, now + 1, console.print),
            ]:
                console.print(f"action: {action}")
    for name, skew in skews.items():
        worst = max(skew["rates"].items(), key=lambda kv: kv[1], default=("-", 0.0))
        console.print(
            f"skew {name}: {skew['checked']} predictions recomputed offline, "
            f"{len(skew['mismatches'])} mismatching values (worst: {worst[0]} "
            f"{worst[1]:.1%})"
        )
    if not reports:
        console.print("no predictions in the window")
        return
    for r in reports:
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in r.metrics.items()) or "no labels yet"
        console.print(
            f"[bold]{r.service}[/bold] {r.variant} {r.model} v{r.version} "
            f"(owner {r.owner}): {r.predictions:,} predictions, label coverage "
            f"{r.label_coverage:.0%}; {metrics}"
        )
        table = Table("column", "level", "PSI", "KS p", "null rate", "reasons")
        for d in r.drift:
            table.add_row(
                d.name,
                d.level,
                _fmt(d.psi),
                _fmt(d.ks_pvalue),
                _fmt(d.null_rate),
                "; ".join(d.reasons),
            )
        console.print(table)
    by_day = Table("service", "variant", "version", "day", "predictions", "labelled", "delay")
    columns: list[str] = sorted({m for row in daily for m in row.metrics})
    for metric in columns:
        by_day.add_column(metric)
    for row in daily:
        by_day.add_row(
            row.service,
            row.variant,
            f"{row.model} v{row.version}",
            "all days" if row.day is None else from_micros(row.day * DAY_US).date().isoformat(),
            f"{row.predictions:,}",
            f"{row.label_coverage:.0%}",
            "-" if row.label_delay_s is None else f"{row.label_delay_s / 3600:.1f}h",
            *(_fmt(row.metrics.get(metric)) for metric in columns),
        )
    console.print("performance by day of prediction (from the ledger):")
    console.print(by_day)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


@app.command()
def experiment(
    service: Annotated[str, typer.Argument(help="An A/B (or bandit) service")],
    days: Annotated[float, typer.Option(help="Window of prediction times, back from now")] = 30,
    lower_is_better: Annotated[
        bool | None,
        typer.Option(
            "--lower-is-better/--higher-is-better",
            help="Whether a low outcome is good (e.g. churn); default: the service's setting",
        ),
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Per-variant outcomes with confidence intervals, the test used, and a verdict."""
    from headwater.monitoring.experiment import analyze
    from headwater.monitoring.monitor import experiment_outcomes

    with _open(project) as p:
        now = p.now()
        outcomes = experiment_outcomes(p, service, now - int(days * 86_400e6), now + 1)
        higher = p.definitions.services[service].higher_is_better
    if outcomes["variant"].nunique() < 2:
        raise HeadwaterError(
            f"service {service!r} has matured outcomes for fewer than two "
            "variants in the window; wait for labels or widen --days"
        )
    if lower_is_better is not None:
        higher = not lower_is_better
    stats, comparisons = analyze(outcomes, higher_is_better=higher)
    table = Table("variant", "n", "outcome mean", "95% interval")
    for v in stats:
        table.add_row(v.variant, f"{v.n:,}", f"{v.mean:.4f}", f"[{v.ci_low:.4f}, {v.ci_high:.4f}]")
    console.print(table)
    for c in comparisons:
        console.print(
            f"{c.treatment} vs {c.control}: difference {c.difference:+.4f} "
            f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}], p={c.p_value:.3g} ({c.test}) -> "
            f"[bold]{c.verdict}[/bold]"
        )


@app.command()
def report(
    model: Annotated[str, typer.Argument(help="Model to report on")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file to write")] = None,
    days: Annotated[int, typer.Option(help="Days of predictions")] = 14,
    project: ProjectOpt = Path("."),
) -> None:
    """Write a self-contained HTML report: live performance, drift, predictions vs reference."""
    from headwater.monitoring.report import render

    with _open(project) as p:
        page = render(p, model, days)
        target = out or p.root / f"{model}-report.html"
    target.write_text(page)
    console.print(f"report written to {target}")


@app.command()
def quickstart(
    folder: Annotated[Path, typer.Option("--dir", help="Where to create the project")] = Path(
        "headwater-shop"
    ),
    users: Annotated[int, typer.Option(help="Simulated users")] = 2000,
    days: Annotated[int, typer.Option(help="Simulated days of activity before now")] = 56,
    loop: Annotated[
        bool,
        typer.Option(help="Then deliver ground truth and a drift: monitor, alert, retrain"),
    ] = True,
    log: Annotated[
        str | None, typer.Option(help="Log URL, e.g. kafka://host:9092?partitions=4")
    ] = None,
    online: Annotated[
        str | None, typer.Option(help="Online store URL, e.g. redis://host:6379/0")
    ] = None,
    offline: Annotated[
        str | None, typer.Option(help="Offline store URL, e.g. s3://bucket/path")
    ] = None,
    metadata: Annotated[
        str | None,
        typer.Option(help="Metadata store URL, e.g. postgresql://user@host/db?schema=shop"),
    ] = None,
    now: Annotated[
        str | None,
        typer.Option(help="Run as of this ISO time, clock stopped: reruns give the same results"),
    ] = None,
) -> None:
    """Create the shop example, simulate weeks of activity, ingest, process, train, serve,
    and close the loop (ground truth, drift, monitor, alerts, retraining). It runs on the
    embedded stores, or on yours: --log, --online, --offline, --metadata (empty ones)."""
    from headwater.quickstart import run_quickstart

    chosen = {"log": log, "online": online, "offline": offline, "metadata": metadata}
    now_us = None if now is None else _time_option(now, "--now")
    project = run_quickstart(
        folder,
        users=users,
        days=days,
        console=console,
        loop=loop,
        stores={port: url for port, url in chosen.items() if url is not None},
        now_us=now_us,
    )
    project.close()


source_app = typer.Typer(
    help="Sources: feed streams from database tables and landing folders.", no_args_is_help=True
)
app.add_typer(source_app, name="source")


@source_app.command("run")
def source_run(
    name: Annotated[str | None, typer.Argument(help="A source (default: every one)")] = None,
    forever: Annotated[bool, typer.Option(help="Keep polling; Ctrl-C to stop")] = False,
    every: Annotated[
        float | None, typer.Option(help="Seconds between polls (implies --forever)")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Poll sources once, or forever: new table rows and landed files become events."""
    import threading

    from headwater.sources import SourceRunner

    def report(results, quiet: bool) -> None:  # type: ignore[no-untyped-def]
        for r in results:
            if r.error:
                err.print(f"[red]{r.summary()}[/red]")
            elif not quiet or r.read or r.problems:  # polling forever: only news
                console.print(r.summary())

    with _open(project) as p:
        runner = SourceRunner(p)
        names = [runner.source(name).name] if name else None
        if not runner.sources:
            console.print("no sources declared; declare a TableSource or FolderSource")
            return
        try:
            if forever or every is not None:
                console.print("polling sources; Ctrl-C to stop")
                stop = threading.Event()
                try:
                    runner.run_forever(stop, every or 10.0, names, lambda rs: report(rs, True))
                except KeyboardInterrupt:
                    stop.set()
                return
            results = runner.poll(names)
        finally:
            runner.close()
    report(results, False)
    if any(r.error for r in results):
        raise typer.Exit(1)


@source_app.command("status")
def source_status(project: ProjectOpt = Path(".")) -> None:
    """Each source's stream, what it reads, and its checkpoint."""
    from headwater.sources import SourceRunner

    with _open(project) as p:
        rows = SourceRunner(p).status()
    table = Table("source", "stream", "reads", "position", "events", "updated")
    for row in rows:
        when = row["updated_at"]
        updated = "-" if not when else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when / 1e6))
        table.add_row(
            row["source"], row["stream"], row["reads"], row["position"], str(row["events"]), updated
        )
    console.print(table)


@source_app.command("reset")
def source_reset(
    name: Annotated[str, typer.Argument(help="The source to read again from its start")],
    project: ProjectOpt = Path("."),
) -> None:
    """Forget a source's checkpoint; its events keep their ids, so none is appended twice."""
    from headwater.sources import SourceRunner

    with _open(project) as p:
        SourceRunner(p).reset(name)
    console.print(f"{name}: checkpoint reset; the next `headwater source run` reads from the start")


def main() -> None:
    try:
        app()
    except HeadwaterError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
