"""Serving: predictions/s and p50/p99 latency for single-entity requests at 1, 8, 32 clients.

Side by side, on the same LightGBM model (the quickstart's churn model) and machine:
  headwater   POST /v1/predict/retention — online features, derived features, model, logging;
              timed at its steady state (every user asked once before), with its first
              request per entity (nothing of it decoded or evaluated yet) on a line of its own
  keys on     the same, with `[server] auth = "keys"`: every request's key checked, with
              its scope (a copy of the project)
  2 workers   the same, `headwater serve --workers 2` (two processes on the port)
  written     the headwater server again while another process commits to its online
              store every millisecond (a busy processor): each commit moves the store's
              change mark, so requests read their entity's bytes again (the worst case of
              the per-entity caches)
  bare        a FastAPI endpoint that only calls the booster on a given vector (the ceiling)
  raw ASGI    the same booster behind a minimal ASGI callable (no framework): a second ceiling
  mlflow      `mlflow models serve` of the same fitted model (sent the same feature vector)
  bentoml     a BentoML service calling the same booster (its own venv, made on first use
              in benchmarks/.work/bentoml-venv from the package registry)
  gRPC        headwater's Open Inference Protocol over gRPC (ModelInfer, one entity's key),
              the same server process and code path as the HTTP route
  in-process  `Project.predict` in this process, logging on: each of the users' first call
              (cold: nothing of the entity decoded yet), then the same calls again (warm),
              then again with a commit to the store by another connection before each;
              beside it the machine's jitter (p99 / p50 of pure Python that takes the warm
              p50): the floor under the predict's p99 / p50

Every server runs under uvicorn's (or its own) defaults with one process, except the 2 workers
line; the server CPU per request is the CPU time of the server's process tree (workers
included) during a level, divided by its requests.

The project, model and servers are set up once; then each of ``--runs`` runs sends every
server every client level, and the figures are printed as min / median / max over the runs.

    python benchmarks/serving.py [--requests 12000] [--users 2000] [--runs 3]
        [--skip-mlflow] [--skip-bentoml]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    WORK,
    Figures,
    add_runs_argument,
    fresh_dir,
    grpc_load,
    load,
    tree_cpu_seconds,
)

from headwater import Project  # noqa: E402
from headwater.stores.online.sqlite import SqliteOnlineStore  # noqa: E402

BARE_APP = """
import lightgbm as lgb
import numpy as np
from fastapi import FastAPI, Request

booster = lgb.Booster(model_file={model!r})
app = FastAPI()

@app.post("/predict")
async def predict(request: Request):
    body = await request.json()
    x = np.asarray([[np.nan if v is None else v for v in body["features"]]], dtype=float)
    return {{"score": float(booster.predict(x, num_threads=1)[0])}}
"""

RAW_APP = """
import json
import lightgbm as lgb
import numpy as np

booster = lgb.Booster(model_file={model!r})
HEADERS = [(b"content-type", b"application/json")]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    row = [np.nan if v is None else v for v in json.loads(body)["features"]]
    score = float(booster.predict(np.asarray([row], dtype=float), num_threads=1)[0])
    out = json.dumps({{"score": score}}).encode()
    await send({{"type": "http.response.start", "status": 200,
                "headers": HEADERS + [(b"content-length", str(len(out)).encode())]}})
    await send({{"type": "http.response.body", "body": out}})
"""

BENTO_SERVICE = """
import bentoml
import lightgbm as lgb
import numpy as np


@bentoml.service(workers=1)
class Churn:
    def __init__(self) -> None:
        self.booster = lgb.Booster(model_file={model!r})

    @bentoml.api
    def predict(self, features: list[float | None]) -> dict:
        x = np.asarray([[np.nan if v is None else v for v in features]], dtype=float)
        return {{"score": float(self.booster.predict(x, num_threads=1)[0])}}
"""
BENTOML = "bentoml==1.4.40"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not start")


def prepare(users: int, folder: Path) -> tuple[Project, list[str]]:
    from headwater.examples.shop.simulator import simulate
    from headwater.quickstart import prepare_folder

    prepare_folder(folder)
    project = Project(folder)
    project.apply()
    sim = simulate(users=users, days=35, end=project.now() / 1e6, seed=7)
    for name, events in sim.events.items():
        project.ingest(name, events)
    project.process()
    version = project.train("churn").version
    project.promote("churn", version, by="benchmark", reason="serving benchmark")
    return project, sorted(sim.users)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=12000, help="requests per client level")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--skip-mlflow", action="store_true")
    ap.add_argument("--skip-bentoml", action="store_true")
    add_runs_argument(ap)
    args = ap.parse_args()
    figures = Figures(args.runs)
    once = Figures(1)  # what can be measured once only (the first request per entity)
    work = fresh_dir("serving")
    print("preparing the quickstart's project and churn model ...", flush=True)
    project, users = prepare(args.users, work / "shop")
    doc = project.registry.version("churn", "champion")
    # the other servers load the same model files, copied out of the artifacts store
    (work / "model").mkdir()
    for kind, name in list(doc["artifacts"].items()):
        copy = work / "model" / Path(name).name
        copy.write_bytes(project.registry.read_artifact(doc, kind))
        doc["artifacts"][kind] = str(copy)
    features = doc["signature"]["features"]
    rng = np.random.default_rng(1)
    chosen = [users[i] for i in rng.integers(0, len(users), args.requests)]
    vectors = project.online_features([{"user_id": u} for u in chosen[:200]], features)
    project.close()
    matrix = feature_matrix(doc, features, vectors, args.requests)
    keyed, secret = keyed_copy(work)
    headers = {KEYS: {"authorization": f"Bearer {secret}"}}

    procs: list[subprocess.Popen] = []
    # mlflow starts `uvicorn` through the shell: the venv's bin must be on PATH
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": path}
    levels = [int(c) for c in args.clients.split(",")]
    try:
        grpc_port = free_port()
        servers = {
            "headwater": start_headwater(work, chosen, env, procs, grpc_port),
            KEYS: start_headwater(work, chosen, env, procs, None, project=keyed),
            TWO: start_headwater(work, chosen, env, procs, None, workers=2),
            "bare FastAPI + booster": start_bare(doc, matrix, work, env, procs),
            RAW: start_raw(doc, matrix, work, env, procs),
        }
        servers[WRITTEN] = servers["headwater"]  # measured while a writer commits
        if not args.skip_mlflow:
            servers["mlflow models serve"] = start_mlflow(doc, features, matrix, work, env, procs)
        if not args.skip_bentoml:
            servers["bentoml serve"] = start_bentoml(doc, matrix, work, env, procs)
        for name, (url, bodies, _) in servers.items():
            warm_up(name, url, bodies, headers.get(name))
        # headwater keeps each entity's decoded state and evaluated values: its first
        # request per entity costs more. Measured once, at 1 client over every user, then
        # every server is timed at its steady state (the same users again)
        first = [{"entity": {"user_id": u}} for u in dict.fromkeys(chosen)]
        failed = measure(COLD, servers["headwater"][0], first, 1, once, servers["headwater"][2])
        once.add(f"{COLD}: failed requests", failed, "requests")
        load(servers[TWO][0], first, 8)
        load(servers[KEYS][0], first, 8, headers[KEYS])
        for _ in figures.runs():
            # every server at one level before the next level: two servers compared in a
            # ratio are measured seconds apart, not minutes (this machine's speed drifts)
            failed = dict.fromkeys(servers, 0)
            for clients in levels:
                for name, (url, bodies, pid) in servers.items():
                    writer = start_writer(work / "shop", env) if name == WRITTEN else None
                    try:
                        failed[name] += measure(
                            name, url, bodies, clients, figures, pid, headers.get(name)
                        )
                    finally:
                        if writer is not None:
                            writer.kill()
                            writer.wait()
            for name, count in failed.items():
                figures.add(f"{name}: failed requests (every level)", count, "requests")
            measure_grpc(f"127.0.0.1:{grpc_port}", chosen, levels, figures, procs[0].pid)
            measure_heavy(servers["headwater"][0], chosen, figures)
            measure_in_process(work / "shop", chosen, figures)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    for clients in levels:
        figures.compare(
            f"headwater gRPC / headwater HTTP, {clients} clients (req/s)",
            f"{GRPC}, {clients} clients: req/s",
            f"headwater, {clients} clients: req/s",
        )
    for clients in levels:
        figures.compare(
            f"headwater 2 workers / 1 worker, {clients} clients (req/s)",
            f"{TWO}, {clients} clients: req/s",
            f"headwater, {clients} clients: req/s",
        )
    for clients in levels:
        figures.compare(
            f"headwater, API keys on / off, {clients} clients (req/s)",
            f"{KEYS}, {clients} clients: req/s",
            f"headwater, {clients} clients: req/s",
        )
    for clients in levels:
        figures.compare(
            f"headwater, store written every ms / not written, {clients} clients (req/s)",
            f"{WRITTEN}, {clients} clients: req/s",
            f"headwater, {clients} clients: req/s",
        )
    for name in [n for n in servers if n not in ("headwater", TWO, KEYS, WRITTEN)]:
        for clients in levels:
            figures.compare(
                f"headwater / {name}, {clients} clients (req/s)",
                f"headwater, {clients} clients: req/s",
                f"{name}, {clients} clients: req/s",
            )
        for clients in levels:
            figures.compare(
                f"headwater, API keys on / {name}, {clients} clients (req/s)",
                f"{KEYS}, {clients} clients: req/s",
                f"{name}, {clients} clients: req/s",
            )
        for clients in levels:
            figures.compare(
                f"headwater, store written every ms / {name}, {clients} clients (req/s)",
                f"{WRITTEN}, {clients} clients: req/s",
                f"{name}, {clients} clients: req/s",
            )
    for clients in levels:
        figures.compare(
            f"headwater / bare FastAPI + booster, {clients} clients (p99)",
            f"headwater, {clients} clients: p99",
            f"bare FastAPI + booster, {clients} clients: p99",
        )
    print(figures.report())
    print(once.report())


def feature_matrix(
    doc: dict, features: list[str], vectors: list[dict], requests: int
) -> list[list[float]]:
    """The model's input vectors (categories as their codes), one per request."""
    categories = doc["signature"]["categories"]

    def code(name: str, value: object) -> float:
        if value is None:
            return math.nan
        if name in categories:
            known = categories[name]
            return float(known.index(value)) if value in known else math.nan
        return float(value)  # type: ignore[arg-type]

    raw = [[v.get(f) for f in features] for v in vectors]
    numeric = [[code(f, x) for f, x in zip(features, row, strict=True)] for row in raw]
    return [numeric[i % len(numeric)] for i in range(requests)]


def measure_in_process(folder: Path, chosen: list[str], figures: Figures) -> None:
    """``Project.predict`` of one entity at a time, in a project opened afresh: the first
    call per user is cold, a second pass over the same users warm.

    Beside it, the machine's own jitter: a fixed piece of pure Python that takes about the
    warm p50, timed the same way as many times. On a virtual machine a periodic stall (the
    hypervisor's timer tick, 30-100 µs every 4 ms on the machines measured) lands in about
    one call in a hundred of that length: its p99 / p50 is the floor under the predict's."""
    users = list(dict.fromkeys(chosen))
    with Project(folder) as project:
        project.predict("retention", user_id=users[0])  # the model loads: not timed
        p50 = 0.0
        other = SqliteOnlineStore(folder / ".headwater" / "online.db")  # a processor's commits
        for label in ("cold", "warm", "store written before each call"):
            written = label.startswith("store")
            took = []
            for tick, user in enumerate(users):
                if written:
                    other.write({}, {"benchmark-writer": tick})
                start = time.perf_counter()
                project.predict("retention", user_id=user)
                took.append((time.perf_counter() - start) * 1e6)
            took.sort()
            middle, p99 = took[len(took) // 2], took[int(len(took) * 0.99)]
            figures.add(f"in-process predict, {label}: p50", middle, "µs")
            figures.add(f"in-process predict, {label}: p99", p99, "µs")
            figures.add(f"in-process predict, {label}: p99 / p50", p99 / middle, "x")
            if label == "warm":
                p50 = middle
        other.close()
    floor = _jitter(p50, len(users))
    figures.add("machine jitter (pure Python of the warm p50): p99 / p50", floor, "x")


def _jitter(micros: float, calls: int) -> float:
    """p99 / p50 of ``calls`` timings of a loop calibrated to take ``micros``."""

    def spin(n: int) -> int:
        total = 0
        for i in range(n):
            total += i * i
        return total

    start = time.perf_counter()
    spin(100_000)
    per_step = (time.perf_counter() - start) / 100_000 * 1e6
    steps = max(1, int(micros / per_step))
    took = []
    for _ in range(calls):
        start = time.perf_counter()
        spin(steps)
        took.append(time.perf_counter() - start)
    took.sort()
    return took[int(calls * 0.99)] / took[calls // 2]


def measure_heavy(predict_url: str, users: list[str], figures: Figures, probes: int = 200) -> None:
    """/healthz latency alone and while maximal predict requests (1,000 entities, the
    default [server] max_entities) run back to back: large calls are answered off the event
    loop, so the probe should wait for the GIL, never for the whole call."""
    import threading

    base = predict_url.rsplit("/v1/", 1)[0]
    body = {"entities": [{"user_id": u} for u in (users * 1000)[:1000]]}

    def probe(http: httpx.Client) -> list[float]:
        out = []
        for _ in range(probes):
            t0 = time.perf_counter()
            http.get(base + "/healthz").raise_for_status()
            out.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.002)
        return sorted(out)

    stop, heavy_ms = threading.Event(), []

    def heavy() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                t0 = time.perf_counter()
                http.post(predict_url, json=body).raise_for_status()
                heavy_ms.append((time.perf_counter() - t0) * 1000)

    with httpx.Client(timeout=10) as http:
        idle = probe(http)
        worker = threading.Thread(target=heavy)
        worker.start()
        try:
            busy = probe(http)
        finally:
            stop.set()
            worker.join()
    for label, values in (("idle", idle), ("during 1,000-entity predicts", busy)):
        figures.add(f"/healthz p50, {label}", values[len(values) // 2], "ms")
        figures.add(f"/healthz p99, {label}", values[int(len(values) * 0.99) - 1], "ms")
    figures.add("predict of 1,000 entities, p50", sorted(heavy_ms)[len(heavy_ms) // 2], "ms")


TWO = "headwater, 2 workers"
KEYS = "headwater, API keys on"
WRITTEN = "headwater, store written every ms"
# A processor's commits, as often as a busy one makes them: each moves the online store's
# change mark, so every request reads its entity's bytes again and compares them.
WRITER = """
import sys, time
from headwater.stores.online.sqlite import SqliteOnlineStore
store = SqliteOnlineStore(sys.argv[1])
tick = 0
while True:
    tick += 1
    store.write({}, {"benchmark-writer": tick})
    time.sleep(0.001)
"""
RAW = "raw ASGI + booster"
Server = tuple[str, list[dict], int]  # URL, request bodies, the server's process id


def keyed_copy(work: Path) -> tuple[Path, str]:
    """A copy of the project with ``[server] auth = "keys"``, and a key that may predict."""
    folder = work / "shop-keys"
    shutil.copytree(work / "shop", folder)
    toml = folder / "headwater.toml"
    toml.write_text(toml.read_text().replace("[server]\n", '[server]\nauth = "keys"\n', 1))
    with Project(folder) as project:
        _, secret = project.create_key("bench", ["predict:retention"])
    return folder, secret


def start_headwater(
    work: Path,
    chosen: list[str],
    env: dict,
    procs: list[subprocess.Popen],
    grpc_port: int | None,
    workers: int = 1,
    project: Path | None = None,
) -> Server:
    port = free_port()
    folder = project or work / "shop"
    cmd = [sys.executable, "-m", "headwater", "serve", "-p", str(folder)]
    cmd += ["--workers", str(workers)]
    if grpc_port is not None:
        cmd += ["--grpc-port", str(grpc_port)]
    procs.append(
        subprocess.Popen(
            [*cmd, "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    wait_ready(f"http://127.0.0.1:{port}/healthz", procs[-1])
    bodies = [{"entity": {"user_id": u}} for u in chosen]
    return f"http://127.0.0.1:{port}/v1/predict/retention", bodies, procs[-1].pid


def start_writer(folder: Path, env: dict) -> subprocess.Popen:
    """A process that commits to the project's online store every millisecond."""
    online = folder / ".headwater" / "online.db"
    return subprocess.Popen([sys.executable, "-c", WRITER, str(online)], env=env)


def start_bare(
    doc: dict, matrix: list[list[float]], work: Path, env: dict, procs: list[subprocess.Popen]
) -> Server:
    return _uvicorn_app("bare_app", BARE_APP, doc, matrix, work, env, procs, "/docs")


def start_raw(
    doc: dict, matrix: list[list[float]], work: Path, env: dict, procs: list[subprocess.Popen]
) -> Server:
    return _uvicorn_app("raw_app", RAW_APP, doc, matrix, work, env, procs, "/predict")


def _uvicorn_app(
    module: str,
    source: str,
    doc: dict,
    matrix: list[list[float]],
    work: Path,
    env: dict,
    procs: list[subprocess.Popen],
    probe: str,
) -> Server:
    bare = work / f"{module}.py"
    bare.write_text(textwrap.dedent(source.format(model=doc["artifacts"]["lightgbm"])))
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", f"{module}:app", "--port", str(port)]
    procs.append(
        subprocess.Popen(
            [*cmd, "--log-level", "warning", "--app-dir", str(work)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    wait_ready(f"http://127.0.0.1:{port}{probe}", procs[-1])
    return f"http://127.0.0.1:{port}/predict", [{"features": row} for row in matrix], procs[-1].pid


def warm_up(name: str, url: str, bodies: list[dict], headers: dict[str, str] | None = None) -> None:
    """A few requests before any is timed; a failure is shown instead of being timed."""
    for body in bodies[:20]:
        r = httpx.post(
            url,
            content=json.dumps(body),
            timeout=30,
            headers={"content-type": "application/json", **(headers or {})},
        )
        if r.status_code != 200:
            print(f"  {name} answered {r.status_code}: {r.text[-700:]}", flush=True)
            return


def measure(
    name: str,
    url: str,
    bodies: list[dict],
    clients: int,
    figures: Figures,
    pid: int,
    headers: dict[str, str] | None = None,
) -> int:
    """One level of one server; returns its failed requests."""
    cpu = tree_cpu_seconds(pid)
    result = load(url, bodies, clients, headers)
    result["cpu"] = (tree_cpu_seconds(pid) - cpu) / len(bodies) * 1e6
    for key, label, unit in (
        ("rps", "req/s", "req/s"),
        ("p50", "p50", "ms"),
        ("p99", "p99", "ms"),
        ("cpu", "server CPU per request", "µs"),
    ):
        figures.add(f"{name}, {clients} clients: {label}", result[key], unit)
    print(
        f"  {name:<24} {clients:>3} clients: {result['rps']:8,.0f} req/s  "
        f"p50 {result['p50']:6.2f} ms  p99 {result['p99']:7.2f} ms  "
        f"CPU {result['cpu']:5.0f} µs/req  errors {result['errors']:.0f}",
        flush=True,
    )
    return int(result["errors"])


GRPC = "headwater gRPC (ModelInfer)"
COLD = "headwater, first request per entity"


def measure_grpc(
    target: str, chosen: list[str], levels: list[int], figures: Figures, pid: int
) -> None:
    """headwater's Open Inference Protocol over gRPC: one entity per ModelInfer, the same
    users as the HTTP requests."""
    from headwater.serving.grpc import inference_pb2

    bodies = []
    for user in chosen:
        request = inference_pb2.ModelInferRequest(model_name="retention")
        tensor = request.inputs.add(name="user_id", datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(user.encode())
        bodies.append(request.SerializeToString())
    errors = 0
    for clients in levels:
        cpu = tree_cpu_seconds(pid)
        result = grpc_load(target, "/inference.GRPCInferenceService/ModelInfer", bodies, clients)
        result["cpu"] = (tree_cpu_seconds(pid) - cpu) / len(bodies) * 1e6
        for key, label, unit in (("rps", "req/s", "req/s"), ("p50", "p50", "ms"),
                                 ("p99", "p99", "ms"),
                                 ("cpu", "server CPU per request", "µs")):  # fmt: skip
            figures.add(f"{GRPC}, {clients} clients: {label}", result[key], unit)
        errors += int(result["errors"])
        print(
            f"  {GRPC:<24} {clients:>3} clients: {result['rps']:8,.0f} req/s  "
            f"p50 {result['p50']:6.2f} ms  p99 {result['p99']:7.2f} ms  "
            f"CPU {result['cpu']:5.0f} µs/req  errors {result['errors']:.0f}",
            flush=True,
        )
    figures.add(f"{GRPC}: failed requests (every level)", errors, "requests")


def start_mlflow(
    doc: dict,
    features: list[str],
    matrix: list[list[float]],
    work: Path,
    env: dict,
    procs: list[subprocess.Popen],
) -> tuple[str, list[dict]]:
    import joblib
    import mlflow.lightgbm

    estimator = joblib.load(doc["artifacts"]["estimator"])
    model_dir = work / "mlflow_model"
    # LightGBM's own format (the sklearn wrapper's flavor needs skops to save). Categories go
    # in as their codes, the same vector the bare endpoint gets, so the booster must not
    # expect pandas categoricals.
    booster = estimator.booster_
    booster.pandas_categorical = None
    mlflow.lightgbm.save_model(booster, str(model_dir))
    port = free_port()
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                str(model_dir),
                "--port",
                str(port),
                "--env-manager",
                "local",
                "--workers",
                "1",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    wait_ready(f"http://127.0.0.1:{port}/ping", procs[-1])
    bodies = [{"dataframe_split": {"columns": features, "data": [row]}} for row in matrix]
    return f"http://127.0.0.1:{port}/invocations", bodies, procs[-1].pid


def bentoml_python() -> Path:
    """The Python of a venv of BentoML's own (its dependencies are not headwater's), made on
    first use from the package registry."""
    venv = WORK / "bentoml-venv"
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        print(f"making a venv with {BENTOML} in {venv} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", BENTOML, "lightgbm", "numpy"], check=True
        )
        (venv / ".installed").touch()
    return python


def start_bentoml(
    doc: dict, matrix: list[list[float]], work: Path, env: dict, procs: list[subprocess.Popen]
) -> Server:
    python = bentoml_python()
    (work / "bento_service.py").write_text(
        textwrap.dedent(BENTO_SERVICE.format(model=doc["artifacts"]["lightgbm"]))
    )
    port = free_port()
    bento_env = {**env, "BENTOML_HOME": str(work / "bentoml_home"), "BENTOML_DO_NOT_TRACK": "1"}
    bento_env["PATH"] = f"{python.parent}{os.pathsep}{env['PATH']}"
    procs.append(
        subprocess.Popen(
            [str(python), "-m", "bentoml", "serve", "bento_service:Churn", "--port", str(port)],
            cwd=work,
            env=bento_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    )
    wait_ready(f"http://127.0.0.1:{port}/readyz", procs[-1])
    bodies = [{"features": [None if math.isnan(v) else v for v in row]} for row in matrix]
    return f"http://127.0.0.1:{port}/predict", bodies, procs[-1].pid


if __name__ == "__main__":
    main()
