"""``headwater quickstart``: the shop example, end to end, on embedded defaults or on the
stores a user names (Kafka, Redis, PostgreSQL)."""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from headwater.client import Client
from headwater.definitions.source import redact_url
from headwater.definitions.types import from_micros, iso
from headwater.errors import HeadwaterError
from headwater.ingestion.service import IngestResult
from headwater.log.base import DEAD_LETTER_STREAM
from headwater.project.config import add_pii_secret
from headwater.project.project import Project, system_clock

MARKER = ".headwater-quickstart"
SAMPLE_FEATURES = [
    "sessions_7d",
    "page_views_1d",
    "orders_30d",
    "spend_30d",
    "order_value_lifetime",
    "tickets_30d",
    "recent_pages_1d",
    "refund_rate_30d",
]


def prepare_folder(
    folder: Path, stores: Mapping[str, str] | None = None, auth: bool = False
) -> None:
    """A fresh project folder; one made by an earlier quickstart is replaced. ``stores``
    (port → URL, e.g. ``{"log": "kafka://127.0.0.1:9092"}``) replace embedded defaults;
    ``auth`` makes its server require API keys."""
    if folder.exists():
        if not (folder / MARKER).exists():
            raise HeadwaterError(
                f"{folder} exists and was not made by the quickstart; pass --dir NEW_FOLDER"
            )
        shutil.rmtree(folder)
    source = Path(__file__).parent / "examples" / "shop"
    folder.mkdir(parents=True)
    shutil.copy(source / "definitions.py", folder / "definitions.py")
    config = (source / "headwater.toml").read_text()
    if stores:
        config = with_stores(config, stores)
    if auth:
        config = config.replace("[server]\n", '[server]\nauth = "keys"\n', 1)
    (folder / "headwater.toml").write_text(config)
    # A development PII secret of its own (mode 600, in the project's state folder): the
    # shop's emails are pseudonymized with it before anything is stored.
    add_pii_secret(folder)
    (folder / MARKER).write_text("made by `headwater quickstart`; safe to delete\n")


class TeamGateway:
    """``quickstart --auth``: the project's own server on loopback, and one API key per team
    that owns something (scope ``TEAM:*``): each write goes through the server with a key of
    the team that owns what it writes to."""

    CHUNK = 5000  # events per request

    def __init__(self, project: Project) -> None:
        from headwater.serving.http.server import serve_in_background

        self._project = project
        d = project.definitions
        owners = {("stream", n): s.owner for n, s in d.streams.items()}
        owners |= {("model", n): m.owner for n, m in d.models.items()}
        owners |= {("service", n): s.owner for n, s in d.services.items()}
        self._owners = owners
        self.keys = {
            team: project.create_key(team, [f"{team}:*"], by="quickstart")[1]
            for team in sorted(set(owners.values()))
        }
        self._server = serve_in_background(project.app())
        self.url = self._server.__enter__()
        self._clients: dict[str, Client] = {}

    def headers_for(self, kind: str, name: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[self._owners[(kind, name)]]}"}

    def _client(self, kind: str, name: str) -> Client:
        team = self._owners[(kind, name)]
        if team not in self._clients:
            self._clients[team] = Client(self.url, api_key=self.keys[team], timeout=60)
        return self._clients[team]

    def ingest(self, stream: str, events: Any) -> IngestResult:
        rows = list(events)
        result = IngestResult()
        client = self._client("stream", stream)
        for start in range(0, len(rows), self.CHUNK):
            result.merge(client.ingest(stream, rows[start : start + self.CHUNK]), start)
        return result

    def promote(self, model: str, version: int, reason: str) -> None:
        self._client("model", model).promote(model, version, reason=reason)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._server.__exit__(None, None, None)


def with_stores(config: str, stores: Mapping[str, str]) -> str:
    """The text of a ``headwater.toml`` with ``stores`` in its [stores] section (the other
    ports keep theirs); ``Project`` validates the URLs when it opens them.

    >>> print(with_stores('[stores]\\nlog = "sqlite:///log.db"\\nonline = "sqlite:///o.db"\\n',
    ...                   {"log": "kafka://k:9092"}), end="")
    # Chosen with `headwater quickstart`; the others are the embedded defaults.
    [stores]
    log = "kafka://k:9092"
    online = "sqlite:///o.db"
    """
    urls = {**tomllib.loads(config)["stores"], **stores}
    header = config.index("[stores]")
    paragraph = config.rfind("\n\n", 0, header)  # the section's comment goes with it
    start = 0 if paragraph == -1 else paragraph + 2
    end = config.find("\n[", header)
    section = "# Chosen with `headwater quickstart`; the others are the embedded defaults.\n"
    # A JSON string is a TOML basic string (the same quotes and escapes).
    section += "[stores]\n" + "".join(
        f"{port} = {json.dumps(url, ensure_ascii=False)}\n" for port, url in urls.items()
    )
    return config[:start] + section + ("" if end == -1 else config[end:])


def check_stores_unused(project: Project) -> None:
    """Stores outside the folder outlive it, so an earlier quickstart's events or definitions
    in them would mix with this run's (a Kafka log does not deduplicate events): refuse them.
    Online state is derived from the log, which holds none of the shop's events: any left
    there is stale, and cleared."""
    from headwater.monitoring.monitor import ALERTS
    from headwater.serving.routing import PREDICTIONS_STREAM

    stores = project.settings.stores
    written = {*project.definitions.streams, DEAD_LETTER_STREAM, PREDICTIONS_STREAM, ALERTS}
    held = [
        stream
        for stream in project.log.streams()
        if stream in written
        and any(project.log.end_offset(stream, p) for p in range(project.log.partitions(stream)))
    ]
    if held:
        raise HeadwaterError(
            f"the log {redact_url(stores.log)} already holds events of {', '.join(held)} "
            "(from an earlier quickstart?); give the quickstart a log without them, e.g. a "
            "fresh Kafka cluster, or delete those topics"
        )
    if project.metadata.definitions():
        raise HeadwaterError(
            f"the metadata store {redact_url(stores.metadata)} already holds definitions "
            "(from an earlier quickstart?); give the quickstart an empty one, e.g. "
            "postgresql://...?schema=NEW_SCHEMA"
        )
    project.processor.clear()


class QuickstartClock:
    """The quickstart's clock: real time, or ``now_us`` and stopped there (so two runs give
    the same results), set back by ``behind_us`` until the closing loop catches up. The demo
    trains and serves its first predictions three weeks before now, so that by now their
    ground truth has matured and the history ends at the real present: what a user tries
    after the demo (online features, training sets, the monitor) agrees with what it showed."""

    def __init__(self, now_us: int | None = None, behind_us: int = 0) -> None:
        self.now_us = now_us
        self.behind_us = behind_us

    def __call__(self) -> int:
        return (system_clock() if self.now_us is None else self.now_us) - self.behind_us


FUTURE_DAYS = 21  # the closing loop's weeks: the ground truth and the drift it shows
DAY_US = 86_400_000_000


def run_quickstart(
    folder: Path,
    *,
    users: int,
    days: int,
    console: Console,
    loop: bool = True,
    stores: Mapping[str, str] | None = None,
    now_us: int | None = None,
    auth: bool = False,
) -> Project:
    """Simulate the shop, ingest through the real path, process, train, serve, and (with
    ``loop``) deliver ground truth and a drift, monitor, retrain; print a summary.

    ``stores`` (port → URL) put the project on other backends than the embedded ones;
    ``now_us`` ends its history at that time, with the clock stopped, instead of the wall
    clock: two runs with the same ``now_us`` give the same results, on any stores; ``auth`` runs
    its writes through its own server with API keys: each stream's events, each promotion
    and the predictions with a key of the team that owns them.
    """
    started = time.perf_counter()
    prepare_folder(folder, stores, auth)
    clock = QuickstartClock(now_us, FUTURE_DAYS * DAY_US if loop else 0)
    project = Project(folder, clock=clock)
    try:
        check_stores_unused(project)
    except HeadwaterError:
        project.close()
        raise
    plan = project.apply(by="quickstart")
    remote = TeamGateway(project) if auth else None
    try:
        _run(project, folder, plan, clock, remote, console, users, days, loop, stores, started)
    finally:
        if remote is not None:
            remote.close()
    return project


def _run(
    project: Project,
    folder: Path,
    plan: Any,
    clock: QuickstartClock,
    remote: TeamGateway | None,
    console: Console,
    users: int,
    days: int,
    loop: bool,
    stores: Mapping[str, str] | None,
    started: float,
) -> None:
    from headwater.examples.shop.simulator import simulate

    ingest = remote.ingest if remote is not None else project.ingest
    console.print(
        f"[bold]1. project[/bold] {folder.resolve()}: registered "
        f"{len(plan.pending)} definitions "
        f"({', '.join(f'{n} {a}' for a, n in plan.summary().items())})"
    )
    if stores:
        chosen = vars(project.settings.stores)
        console.print("   stores: " + ", ".join(f"{k} {redact_url(u)}" for k, u in chosen.items()))
    if remote is not None:
        console.print(
            f"   auth: API keys; its server {remote.url} takes every write with a key of the "
            f"owning team ({', '.join(remote.keys)}), each with the scope TEAM:*"
        )

    end = project.now() / 1e6
    future = FUTURE_DAYS if loop else 0
    # The project's clock stands FUTURE_DAYS before the real now (see QuickstartClock); one
    # simulation runs up to the real now: the events after the clock are the weeks that step
    # 9 delivers (labels mature in them), and its drift shifts behaviour only in those weeks.
    sim = simulate(users=users, days=days + future, end=end + future * 86400, seed=7, drift=0.9)
    sim.events, later = _split(sim.events, end)
    sim.users = sorted({e["user_id"] for e in sim.events["signups"]})  # signed up by now
    console.print(
        f"[bold]2. simulated[/bold] {users} users over {days} days: "
        f"{sum(sim.counts().values()):,} events"
        + (
            f" (and {sum(map(len, later.values())):,} held back for the next {future} days)"
            if loop
            else ""
        )
    )

    t0 = time.perf_counter()
    streams = Table("stream", "owner", "events", "rejected")
    for name, events in sim.events.items():
        result = ingest(name, events)
        streams.add_row(
            name,
            project.definitions.streams[name].owner,
            f"{result.accepted:,}",
            str(len(result.rejected)),
        )
    bad = ingest(
        "purchases",
        [
            {
                "order_id": "o-bad-1",
                "user_id": "u1",
                "amount": "lots",
                "status": "paid",
                "ts": end - 60,
            },
            {"order_id": "o-bad-2", "amount": 10.0, "status": "paid", "ts": end - 60},
        ],
    )
    ingest_s = time.perf_counter() - t0
    total = sum(sim.counts().values())
    console.print(
        f"[bold]3. ingested[/bold] {total:,} events in {ingest_s:.1f}s "
        f"({total / ingest_s:,.0f}/s), each durable in the log before acknowledged"
    )
    console.print(streams)
    for r in bad.rejected:
        console.print(f"   rejected on purpose -> dead-letter stream: {r.reason}")

    t0 = time.perf_counter()
    stats = project.process()
    process_s = time.perf_counter() - t0
    console.print(
        f"[bold]4. processed[/bold] {stats.events:,} events (of the streams features read) "
        f"into online tiles in "
        f"{process_s:.1f}s ({stats.events / max(process_s, 1e-9):,.0f}/s)"
    )

    sample_users = sorted(sim.users)[:3]
    rows = project.online_features([{"user_id": u} for u in sample_users], SAMPLE_FEATURES)
    at = iso(project.now())
    online = Table("feature", *sample_users, title=f"online features at {at}")
    for name in SAMPLE_FEATURES:
        online.add_row(name, *[_show(r[name]) for r in rows])
    console.print("[bold]5. online features[/bold]")
    console.print(online)

    t0 = time.perf_counter()
    spine = _spine(sim.users, end, days, rows=5000)
    training = project.training_set(spine, SAMPLE_FEATURES + ["conversion_7d"])
    train_s = time.perf_counter() - t0
    console.print(
        f"[bold]6. training set[/bold] {training.shape[0]:,} rows x "
        f"{training.shape[1]} columns, point-in-time correct, in {train_s:.1f}s"
    )
    shown = [
        "user_id",
        "timestamp",
        "sessions_7d",
        "orders_30d",
        "spend_30d",
        "tickets_30d",
        "conversion_7d",
    ]
    head = Table(*shown, title="training set (first rows)")
    for row in training[shown].head(5).itertuples(index=False):
        head.add_row(*[_show(v) for v in row])
    console.print(head)

    train_models(project, console, remote)
    serve_predictions(project, sim.users, console, remote)
    if loop:
        close_the_loop(project, clock, later, sim.users, folder, console, ingest)

    console.print(f"\n[green]quickstart finished in {time.perf_counter() - started:.1f}s[/green]")
    for line in next_steps(project, folder, _active_user(project, sim.users)):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def _active_user(project: Project, users: list[str]) -> str:
    """A user with sessions in the last week, so the suggested `features` command shows
    values (the first users may have churned)."""
    first = sorted(users)[:100]
    values = project.online_features([{"user_id": u} for u in first], ["sessions_7d"])
    return next((u for u, v in zip(first, values, strict=True) if v["sessions_7d"]), first[0])


def headwater_command() -> str:
    """How the user runs ``headwater`` from where they are: its name when the shell finds this
    installation, else its path (relative when it is below the working directory)."""
    here = Path(sys.executable).parent / "headwater"
    found = shutil.which("headwater")
    if found and Path(found).resolve() == here.resolve():
        return "headwater"
    try:
        return str(here.relative_to(Path.cwd()))
    except ValueError:
        return str(here)


def next_steps(project: Project, folder: Path, user: str) -> list[str]:
    """The closing summary: where the project is, how to run ``headwater``, and what to try
    (``tests/e2e/test_first_hour.py`` runs every command it suggests)."""
    hw = headwater_command()
    server = project.settings.server
    url = f"http://{server.host}:{server.port}"
    where = f" -p {folder}"
    shown = str(folder) if folder.is_absolute() else f"{folder} ({folder.resolve()})"
    tuned = project.registry.version("purchase_propensity", "champion")["run"]
    lines = [f"The project is in {shown}; its history ends now."]
    if hw != "headwater":
        activate = Path(hw).parent / "activate"
        lines.append(f"Run headwater as {hw}, or `source {activate}` first.")
    lines.append(f"The web UI will be at {url}/ui (`{hw} ui{where}` starts the server).")
    lines += [
        "Try:",
        f"  {hw} serve{where}        # API {url}, UI {url}/ui, docs {url}/docs",
        f"  curl -s -X POST {url}/v1/predict/retention -H 'content-type: application/json'"
        f' -d \'{{"entity": {{"user_id": "{user}"}}}}\'',
        f"  {hw} features user_id={user} -f sessions_7d -f spend_30d{where}",
        f"  {hw} models show churn{where}",
        f"  {hw} runs show {tuned}{where}    # purchase_propensity's steps and search",
        f"  {hw} monitor retention{where}",
        f"  {hw} report churn{where}    # -> {folder / 'reports' / 'churn.html'}",
        f"  {hw} plan{where}",
    ]
    return lines


def train_models(project: Project, console: Console, remote: TeamGateway | None = None) -> None:
    """Train the shop's models on the same features, promote them, compare with baselines."""
    table = Table(
        "model",
        "label",
        "version",
        "rows",
        "AUC",
        "baseline AUC",
        "top feature",
        "steps of its own, search",
        "seconds",
        title="7. models trained on the shared features",
    )
    segments = []
    for name in ("churn", "purchase_propensity"):
        t0 = time.perf_counter()
        result = project.train(name)
        seconds = time.perf_counter() - t0
        doc = project.registry.version(name, result.version)
        if remote is not None:  # over HTTP, with a key of the model's team
            remote.promote(name, result.version, "first trained version")
        else:
            project.promote(name, result.version, by="quickstart", reason="first trained version")
        top = max(doc["importance"].items(), key=lambda kv: abs(kv[1]))[0]
        baseline = doc["comparison"].get("baseline", {}).get("metrics", {}).get("auc")
        table.add_row(
            name,
            project.model(name).label.name,
            f"v{result.version} (champion)",
            f"{doc['lineage']['snapshot']['rows']:,}",
            f"{doc['metrics']['auc']:.3f}",
            "-" if baseline is None else f"{baseline:.3f}",
            top,
            _tuning(doc),
            f"{seconds:.1f}",
        )
        for seg, found in (doc.get("segments") or {}).items():
            gap = found["gap"]
            groups = ", ".join(
                f"{g} {v['auc']:.3f} ({v['rows']:,} rows)"
                for g, v in found["groups"].items()
                if v.get("auc") is not None
            )
            segments.append(
                f"   {name} by {seg}: AUC {groups}"
                + (f"; largest gap {gap['value']:.3f}" if gap else "")
            )
    console.print(table)
    for line in segments:
        console.print(line)


def _tuning(doc: dict) -> str:
    lineage = doc["lineage"]
    parts = []
    if lineage.get("steps"):
        kept = len(doc["signature"]["features"])
        parts.append(f"{', '.join(lineage['steps'])} ({kept} features kept)")
    search = lineage.get("search")
    if search:
        best = ", ".join(f"{k}={v}" for k, v in search["best"]["params"].items())
        parts.append(f"best of {search['trials']} trials: {best}")
    return "; ".join(parts) or "-"


def serve_predictions(
    project: Project, users: list[str], console: Console, remote: TeamGateway | None = None
) -> None:
    """Start the HTTP server on loopback, predict for sampled users over HTTP, show them."""
    import httpx

    from headwater.serving.http.server import serve_in_background

    headers = {} if remote is None else remote.headers_for("service", "retention")
    server = serve_in_background(project.app()) if remote is None else nullcontext(remote.url)
    with server as url, httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        sample = random.Random(3).sample(sorted(users), min(200, len(users)))
        latencies, answers = [], []
        for user in sample:
            t0 = time.perf_counter()
            response = client.post("/v1/predict/retention", json={"entity": {"user_id": user}})
            latencies.append(time.perf_counter() - t0)
            response.raise_for_status()
            answers.append(response.json()["predictions"][0])
    project.serving.logger.flush()
    table = Table(
        "user",
        "churn risk",
        "model",
        "variant",
        "prediction_id",
        title=f"8. predictions over HTTP ({url}/v1/predict/retention)",
    )
    for a in sorted(answers, key=lambda a: -a["score"])[:5]:
        table.add_row(
            a["entity"]["user_id"],
            f"{a['score']:.3f}",
            f"{a['model']} v{a['model_version']}",
            a["variant"],
            a["prediction_id"],
        )
    console.print(table)
    ordered = sorted(latencies)
    logged = project.log.end_offset("predictions")
    console.print(
        f"   {len(answers)} requests, one at a time: p50 "
        f"{ordered[len(ordered) // 2] * 1000:.1f} ms, p99 "
        f"{ordered[int(len(ordered) * 0.99) - 1] * 1000:.1f} ms; every prediction is in "
        f"the log's 'predictions' stream ({logged:,} records, with its features)"
    )


def close_the_loop(
    project: Project,
    clock: QuickstartClock,
    later: dict[str, list[dict]],
    users: list[str],
    folder: Path,
    console: Console,
    ingest: Callable[[str, list[dict]], IngestResult] | None = None,
) -> None:
    """Time passes: ground truth arrives for the served predictions, behaviour drifts; the
    monitor measures live performance, detects the drift, alerts, and a retrain follows."""
    from headwater.monitoring.loop import retrain_if_needed
    from headwater.monitoring.monitor import ALERTS, Monitor

    served_at = project.now()
    clock.behind_us = 0
    t0 = time.perf_counter()
    send = ingest or project.ingest
    delivered = sum(send(name, events).accepted for name, events in later.items())
    project.process()
    now = project.now()
    # Users come back after the drift: score a sample again, in-process this time.
    sample = random.Random(5).sample(sorted(users), min(600, len(users)))
    project.serving.predict("retention", [{"user_id": u} for u in sample], "inprocess")
    console.print(
        f"[bold]9. {FUTURE_DAYS} days later[/bold] the simulator delivered {delivered:,} more "
        f"events (ground truth for the served predictions, and a drift: fewer visits, more "
        f"failed payments, higher prices); {len(sample)} users scored again"
    )
    alerts_before = project.log.end_offset(ALERTS)
    monitor = Monitor(project.monitor_context(), alert=None)
    labelled = [
        r
        for r in monitor.run(
            "retention", since_us=served_at - 3_600_000_000, until_us=served_at + 1
        )
        if r.model == "churn"
    ]
    recent = [
        r for r in monitor.run("retention", since_us=now - 3_600_000_000) if r.model == "churn"
    ]
    table = Table(
        "window",
        "version",
        "predictions",
        "labelled",
        "live AUC",
        "drift alerts",
        title="10. the monitor",
    )
    for name, reports in (("when served", labelled), ("after the drift", recent)):
        for r in reports:
            auc = r.metrics.get("auc")
            table.add_row(
                name,
                f"churn v{r.version}",
                f"{r.predictions:,}",
                f"{r.labelled:,} ({r.label_coverage:.0%})",
                "-" if auc is None else f"{auc:.3f}",
                ", ".join(d.name for d in r.drift if d.level == "alert") or "none",
            )
    console.print(table)
    raised = project.log.end_offset(ALERTS) - alerts_before
    console.print(f"   {raised} alerts appended to the 'alerts' stream (and the server log)")
    actions = retrain_if_needed(
        project.monitor_context(), recent, lambda line: console.print(f"   {line}")
    )
    for a in actions:
        doc = project.registry.version(a["model"], a["version"])
        console.print(
            f"   challenger {a['model']} v{a['version']} trained on the drifted data "
            f"(held-out AUC {doc['metrics']['auc']:.3f}); served as a shadow variant, it would "
            "be promoted by `headwater monitor --act` once it beats the champion on live "
            "labels (or promote it: `headwater models promote`)"
        )
    report = folder / "reports" / "churn.html"
    report.parent.mkdir(exist_ok=True)
    report.write_text(project.report("churn"))
    console.print(f"   the loop took {time.perf_counter() - t0:.1f}s; report: {report.resolve()}")


def _split(
    events: dict[str, list[dict]], end: float
) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """Events before ``end`` (epoch seconds) and the rest."""
    past: dict[str, list[dict]] = {}
    later: dict[str, list[dict]] = {}
    for name, rows in events.items():
        past[name] = [e for e in rows if _seconds(e) < end]
        later[name] = [e for e in rows if _seconds(e) >= end]
    return past, later


def _seconds(event: dict) -> float:
    ts = event["ts"]
    return ts.timestamp() if hasattr(ts, "timestamp") else float(ts)


def _spine(users: list[str], end: float, days: int, rows: int) -> pd.DataFrame:
    rnd = random.Random(11)
    start = end - days * 86400 / 2
    times = [from_micros(int((start + rnd.random() * (end - start)) * 1e6)) for _ in range(rows)]
    return pd.DataFrame(
        {
            "user_id": [rnd.choice(users) for _ in range(rows)],
            "timestamp": pd.to_datetime(times, utc=True),
        }
    )


def _show(value: object) -> str:
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float) and value != value:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "-" if value is None else str(value)
