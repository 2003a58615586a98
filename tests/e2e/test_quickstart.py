"""The README's first command as a user runs it (smaller, so CI stays quick), then the first
hour after it: every command its closing summary suggests, run as printed, and the figures
they show agree with the demo's own (online = training set = the demo's table; no skew; the
monitor's summary = its ledger; the report shows live performance)."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest

from headwater import Project
from headwater.definitions.types import to_micros
from headwater.log.base import DEAD_LETTER_STREAM
from headwater.monitoring.monitor import Monitor
from headwater.privacy.policies import SECRET_ENV
from headwater.quickstart import SAMPLE_FEATURES
from tests.e2e.servers import free_port

STEPS = (
    "1. project",
    "2. simulated",
    "3. ingested",
    "4. processed",
    "5. online features",
    "6. training set",
    "7. models trained",
    "8. predictions over HTTP",
    "9. 21 days later",
    "10. the monitor",
    "retraining churn",
    "quickstart finished",
)
NUMERIC = [f for f in SAMPLE_FEATURES if f != "recent_pages_1d"]
# Without the suite's PII secret: the quickstart makes and uses a secret file of its own.
ENV = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
EMAIL = re.compile(rb"u-\d{6}@mail\.example")  # the simulator's clear emails


def quickstart(folder, users: int, days: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "headwater",
            "quickstart",
            "--dir",
            str(folder),
            "--users",
            str(users),
            "--days",
            str(days),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=folder.parent,
        env=ENV,
    )


@dataclass
class Demo:
    folder: Path
    out: str
    started_us: int
    finished_us: int


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Demo:
    folder = tmp_path_factory.mktemp("first-hour") / "shop"
    started = to_micros(pd.Timestamp.now(tz="UTC"))
    proc = quickstart(folder, users=400, days=42)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return Demo(folder, proc.stdout, started, to_micros(pd.Timestamp.now(tz="UTC")))


def test_quickstart_runs_end_to_end_and_leaves_a_working_project(demo, tmp_path):
    folder, out = demo.folder, demo.out
    for step in STEPS:
        assert step in out, step
    assert "5,000 rows x 11 columns" in out
    with Project(folder) as p:
        assert p.plan().pending == []
        assert p.log.end_offset("page_views") > 1000
        assert p.log.end_offset(DEAD_LETTER_STREAM) == 2
        assert all(lag == 0 for lag in p.processor.lag().values())
        served = p.log.end_offset("predictions")
        assert served > 200  # 200 over HTTP, then the users scored again after the drift
        for model in ("churn", "purchase_propensity"):
            champion = p.registry.version(model, "champion")
            assert champion["metrics"]["auc"] > 0.6, (model, champion["metrics"])
            baseline = champion["comparison"]["baseline"]["metrics"]
            # the shop's baselines are counts, not probabilities: ranking metrics only
            assert "auc" in baseline and not {"log_loss", "brier", "ece"} & set(baseline)
        # a step of the shop's own and a search trained purchase_propensity; churn is
        # evaluated per customer segment
        tuned = p.registry.version("purchase_propensity", "champion")
        search = tuned["lineage"]["search"]
        assert tuned["lineage"]["steps"] == ["drop_constant"] and search["trials"] == 5
        assert tuned["params"]["num_leaves"] == search["best"]["params"]["num_leaves"]
        run = p.registry.run(tuned["run"])
        assert {s["name"] for s in run["steps"]} >= {"drop_constant", "search", "fit"}
        trials = [p.registry.run(i) for i in search["runs"]]
        assert all(t["parent"] == run["id"] and "auc" in t["metrics"] for t in trials)
        groups = p.registry.version("churn", "champion")["segments"]["orders_lifetime"]
        assert list(groups["groups"]) == ["< 1", "[1, 3)", ">= 3"]
        assert "churn by orders_lifetime: AUC < 1" in out
        # the loop: labels matured for the 200 served, a drift alert, a retrained challenger
        assert "200 (100%)" in out
        assert p.log.end_offset("alerts") > 0
        challenger = p.registry.aliases("churn")["challenger"]["history"][-1]
        assert challenger["by"] == "monitor" and "retrained" in challenger["reason"]
        assert len(challenger["reason"]) < 300
        report = (folder / "reports" / "churn.html").read_text()
        assert "Live auc by day" in report and "Drift of v1" in report
        # the history ends at the real now: nothing after the end of the run, and the
        # newest events are from the last hours
        sessions = p.log.read("sessions", 0, p.log.end_offset("sessions"))
        newest = max(r.event_time for r in sessions)
        assert demo.started_us - 86_400_000_000 < newest <= demo.finished_us
    scored = subprocess.run(
        [
            sys.executable,
            "-m",
            "headwater",
            "score",
            "retention",
            "-o",
            str(tmp_path / "s.csv"),
            "-p",
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert scored.returncode == 0, scored.stderr
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0].startswith("user_id,timestamp,prediction_id,score") and len(rows) > 300


def suggested(out: str) -> list[list[str]]:
    """The commands the closing summary suggests, as argument lists (comments dropped)."""
    lines = out[out.index("\nTry:\n") :].splitlines()[2:]
    return [shlex.split(line, comments=True) for line in lines if line.startswith("  ")]


def test_the_closing_summary_says_how_to_run_headwater_and_where_the_project_is(demo):
    tail = demo.out[demo.out.index("quickstart finished") :]
    assert f"The project is in {demo.folder}; its history ends now." in tail
    # The test runs outside the venv's PATH: the summary names the executable and activate.
    executable = Path(sys.executable).parent / "headwater"
    assert f"Run headwater as {executable}, or `source {executable.parent / 'activate'}`" in tail
    commands = suggested(demo.out)
    verbs = [c[1] if c[0] != "curl" else "curl" for c in commands]
    assert verbs == ["serve", "curl", "features", "models", "runs", "monitor", "report", "plan"]
    assert all(Path(c[0]) == executable for c in commands if c[0] != "curl")


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
    return proc


def test_every_suggested_command_works_and_the_figures_agree(demo, tmp_path):
    commands = suggested(demo.out)
    serve, curl, *others = commands
    port = free_port()  # the summary's port (8800) may be taken on a test machine
    server = subprocess.Popen(
        [*serve, "--port", str(port)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )
    try:
        banner = _wait_ready(server)
        base = f"http://127.0.0.1:{port}"
        assert f"API      {base}   (docs {base}/docs" in banner and "no processor here" in banner
        assert "stores   log sqlite:///.headwater/log.db" in banner
        url = next(t for t in curl if t.startswith("http")).replace(":8800", f":{port}")
        body = json.loads(curl[curl.index("-d") + 1])
        answer = httpx.post(url, json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        prediction = answer.json()["predictions"][0]
        assert prediction["unknown_entity"] is False and 0 <= prediction["score"] <= 1
    finally:
        server.terminate()
        server.wait(timeout=30)
        assert server.stderr is not None
        server.stderr.close()
    outputs = {c[1]: run(c).stdout for c in others}
    assert "sessions_7d" in outputs["features"] and "spend_30d" in outputs["features"]
    assert "as_of_us" not in outputs["models"] and "vNone" not in outputs["models"]
    assert "champion: promote v1 at 20" in outputs["models"]
    assert "segment orders_lifetime" in outputs["models"]
    assert "drop_constant" in outputs["runs"] and "search: 5 trials" in outputs["runs"]
    monitor = outputs["monitor"]
    assert "0 mismatching values" in monitor
    pattern = r"(\d[\d,]*) predictions \(.*?\), label coverage (\d+)%;(.*?)\n┏"
    summary = re.search(pattern, monitor, re.S)
    ledger = _table(monitor, "performance by day")
    assert summary and ledger, monitor
    total = dict(zip(ledger["service/variant"], ledger["retention/champion"], strict=True))
    # the summary and the ledger agree: predictions, coverage and every metric both show
    assert (total["predictions"], total["labelled"]) == (summary[1], summary[2] + "%")
    stated = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", summary[3])}
    shared = set(stated) & set(total)
    assert {"auc", "log_loss", "brier", "ece"} <= shared
    assert all(abs(stated[m] - float(total[m])) < 0.0015 for m in shared), (stated, total)
    assert int(summary[2]) > 0  # live performance: matured labels in the window
    assert "no labels yet" not in monitor and "{" not in monitor  # no JSON alerts
    assert "reports/churn.html" in outputs["report"]
    page = (demo.folder / "reports" / "churn.html").read_text()
    assert re.search(r"<h2>Live auc by day.*?<svg", page, re.S), "no live AUC in the report"
    assert not list(demo.folder.glob("*-report.html"))  # one reports folder
    assert "nothing to change" in outputs["plan"]

    with Project(demo.folder) as p:
        # every logged prediction, the curl one included, recomputed offline: no skew
        skew = Monitor(p.monitor_context()).skew(
            "retention", demo.started_us - 30 * 86_400_000_000, p.now() + 1, sample=100_000
        )
        assert skew["checked"] >= 801 and skew["mismatches"] == [], skew["mismatches"][:3]


def test_online_features_training_set_and_the_demo_table_agree(demo, tmp_path):
    hw = suggested(demo.out)[0][0]
    project = ["-p", str(demo.folder)]
    # the demo's table: "online features at T" for three users
    at = re.search(r"online features at (\S+)", demo.out).group(1)
    table = _table(demo.out, "online features at")
    users = table.pop("feature")
    spine = tmp_path / "spine.csv"
    now = pd.Timestamp.now(tz="UTC").floor("s").isoformat()
    with spine.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "timestamp"])
        writer.writerows([u, at] for u in users)
        writer.writerows([u, now] for u in users)
    out = tmp_path / "training.csv"
    run([hw, "training-set", str(spine), "-f", ",".join(NUMERIC), "-o", str(out), *project])
    training = pd.read_csv(out)
    for i, user in enumerate(users):
        past = training.iloc[i]
        for name in NUMERIC:  # the demo's table (2 decimals) = the training set at its time
            assert _close(_cell(table[name][i]), past[name], 0.006), (user, name)
        online = json.loads(
            run(
                [hw, "features", f"user_id={user}", "-f", ",".join(NUMERIC[:4]), "-f"]
                + [",".join(NUMERIC[4:]), "--at", now, "--json", *project]
            ).stdout
        )
        later = training.iloc[len(users) + i]
        for name in NUMERIC:  # online now = the training set now
            assert _close(online[name], later[name], 1e-9), (user, name, online[name])


def _cell(text: str) -> float | None:
    return None if text == "-" else float(text.replace(",", ""))


def _close(a: object, b: object, tolerance: float) -> bool:
    missing = [v is None or (isinstance(v, float) and v != v) for v in (a, b)]
    if any(missing):
        return all(missing)
    return abs(float(a) - float(b)) <= tolerance  # type: ignore[arg-type]


def _table(out: str, title: str) -> dict[str, list[str]]:
    """The rows of a rich table printed after ``title``: first cell -> the other cells."""
    lines = out[out.index(title) :].splitlines()[1:]
    rows: dict[str, list[str]] = {}
    for line in lines:
        if line.startswith("└"):
            break
        if line.startswith(("│", "┃")):
            cells = [c.strip() for c in line.strip("│┃").split("│" if "│" in line else "┃")]
            if cells[0]:
                rows[cells[0]] = cells[1:]
    return rows


def _wait_ready(server: subprocess.Popen) -> str:
    assert server.stderr is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = server.stderr.readline()
        if not line:
            raise AssertionError("serve exited: " + "".join(lines))
        lines.append(line)
        if line.startswith("ready"):
            return "".join(lines)
    raise AssertionError("serve printed no ready line in 60 s: " + "".join(lines))


def test_no_clear_email_is_in_any_file_the_demo_wrote(demo):
    """The shop's emails are pseudonymized at ingest with the quickstart's own secret: not one
    clear email in the log, dead letters, history, sorted copies, online, metadata, artifacts,
    monitor ledger or report; Parquet files are also read column by column (compressed pages
    would hide a value from a byte search)."""
    secret_file = demo.folder / ".headwater" / "pii.secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    files = [f for f in demo.folder.rglob("*") if f.is_file()]
    assert len(files) > 20
    for path in files:
        assert not EMAIL.search(path.read_bytes()), path
    parquet = [f for f in files if f.suffix == ".parquet"]
    assert parquet, "the history is Parquet"
    for path in parquet:
        table = pq.read_table(path)
        for column in table.column_names:
            text = "\n".join(map(str, table.column(column).to_pylist())).encode()
            assert not EMAIL.search(text), (path, column)
    with Project(demo.folder) as p:
        emails = [orjson.loads(r.payload)["email"] for r in p.log.read("signups", 0, 5)]
    assert all(e.startswith("pii_") for e in emails)


STAGING_SECRET = "staging-" + "s" * 40


def test_the_shop_replayed_into_staging_gives_production_quality_results(
    demo, tmp_path, monkeypatch
):
    """The demo's project declares environments afterwards: production keeps its stores as
    they are (namespace ""), staging gets a namespace and a secret of its own. The whole log
    replayed, re-keyed, into staging gives the same online features, training sets, model
    metrics and predictions there."""
    import shutil

    from headwater.privacy.policies import PiiSecret
    from tests.environments_shop import same_frame, same_metrics

    folder = tmp_path / "shop"
    shutil.copytree(demo.folder, folder)
    config = folder / "headwater.toml"
    config.write_text(
        config.read_text() + '\n[environments.production]\nnamespace = ""\n[environments.staging]\n'
    )
    env = {**ENV, "HEADWATER_PII_SECRET_STAGING": STAGING_SECRET}
    replay = subprocess.run(
        [sys.executable, "-m", "headwater", "replay", "--from", "production", "--to", "staging"]
        + ["--rekey", "-p", str(folder)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "next: headwater process --env staging" in replay.stdout
    monkeypatch.delenv(SECRET_ENV)
    monkeypatch.setenv("HEADWATER_PII_SECRET_STAGING", STAGING_SECRET)
    now = to_micros(pd.Timestamp.now(tz="UTC").floor("s"))
    with (
        Project(folder, env="production", clock=lambda: now) as production,
        Project(folder, env="staging", clock=lambda: now) as staging,
    ):
        staging.process()
        secret = PiiSecret(STAGING_SECRET.encode())
        source = [orjson.loads(r.payload) for r in production.log.read("signups", 0, 10**6)]
        copied = [orjson.loads(r.payload) for r in staging.log.read("signups", 0, 10**6)]
        assert [c["email"] for c in copied] == [secret.pseudonym(s["email"]) for s in source]
        users = sorted({s["user_id"] for s in source})
        keys = [{"user_id": u} for u in users]
        assert staging.online_features(keys, NUMERIC) == production.online_features(keys, NUMERIC)
        days = [now - d * 86_400_000_000 for d in (0, 7, 20)]
        spine = pd.DataFrame(
            [
                {"user_id": u, "timestamp": pd.Timestamp(t, unit="us", tz="UTC")}
                for u in users
                for t in days
            ]
        )
        same_frame(
            staging.training_set(spine, NUMERIC),
            production.training_set(spine, NUMERIC),
            ["user_id"],
        )
        versions = []
        for p in (production, staging):
            trained = p.train("churn")
            p.promote("churn", trained.version)
            versions.append(p.registry.versions("churn")[-1])
        same_metrics(versions[0]["metrics"], versions[1]["metrics"])
        rows = [v["lineage"]["snapshot"]["rows"] for v in versions]
        assert rows[0] == rows[1]
        scores = [
            [x.score for x in p.serving.predict("retention", keys[:50], "test")]
            for p in (production, staging)
        ]
        assert scores[0] == pytest.approx(scores[1], rel=1e-9)


def test_a_second_run_replaces_the_folder_it_made(demo):
    # last in this module: it replaces the demo's project
    again = quickstart(demo.folder, 300, 25, "--no-loop")
    assert again.returncode == 0, again.stderr
    assert "8. predictions over HTTP" in again.stdout and "10. the monitor" not in again.stdout
    with Project(demo.folder) as p:
        assert p.log.end_offset("predictions") == 200  # the first run's are gone


def test_quickstart_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine").mkdir()
    proc = quickstart(tmp_path / "mine", users=10, days=20)
    assert proc.returncode == 1
    assert "was not made by the quickstart" in proc.stderr
