"""`headwater serve --workers 2`: two processes answer on one HTTP port and one gRPC port;
only the first runs the processor; /metrics adds up both workers' counters whichever answers;
a worker that dies is started again; SIGTERM to the supervisor drains both (every answered
prediction is in the log) and exits 0. One server for the whole module, stopped last."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import orjson
import pytest

from headwater import Project
from headwater.serving.grpc import inference_pb2, inference_pb2_grpc
from tests.conftest import write_project
from tests.e2e.servers import free_port, start_server
from tests.unit.serving.test_predict import SERVICES
from tests.unit.training.conftest import visits

ANSWERED: list[str] = []  # every prediction id the server answered in this module


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[Path, str, int, subprocess.Popen]]:
    folder = write_project(tmp_path_factory.mktemp("workers") / "p", SERVICES)
    with Project(folder) as p:
        p.ingest("visits", visits(users=40, end=dt.datetime.now(dt.UTC)))
        p.process()
        version = p.train("churn").version
        p.promote("churn", version)
        p.promote("churn", version, alias="challenger")  # every service ready
    port, grpc_port = free_port(), free_port()
    proc = start_server(
        folder, port, "--workers", "2", "--with-processor", "--grpc-port", str(grpc_port)
    )
    yield folder, f"http://127.0.0.1:{port}", grpc_port, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _workers(base: str, want: int = 2, tries: int = 400) -> dict[int, dict]:
    """The workers seen on /readyz over new connections (the kernel spreads them), by pid."""
    seen: dict[int, dict] = {}
    for _ in range(tries):
        answer = httpx.get(f"{base}/readyz", headers={"connection": "close"}, timeout=10)
        assert answer.status_code == 200, answer.text
        worker = answer.json()["worker"]
        seen[worker["pid"]] = worker
        if len(seen) >= want:
            break
    return seen


def _predict(base: str, users: list[str]) -> list[str]:
    body = {"entities": [{"user_id": u} for u in users]}
    answer = httpx.post(
        f"{base}/v1/predict/risk", json=body, headers={"connection": "close"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    ids = [p["prediction_id"] for p in answer.json()["predictions"]]
    ANSWERED.extend(ids)
    return ids


def _served_total(base: str) -> float:
    text = httpx.get(f"{base}/metrics", headers={"connection": "close"}, timeout=10).text
    found = re.findall(r'^headwater_predictions_total\{service="risk",[^}]*\} (\S+)$', text, re.M)
    return sum(float(v) for v in found)


def test_two_workers_answer_on_one_port_and_only_the_first_runs_the_processor(server):
    _, base, _, proc = server
    seen = _workers(base)
    assert len(seen) == 2, seen
    by_index = {w["index"]: w for w in seen.values()}
    assert sorted(by_index) == [0, 1] and {w["of"] for w in seen.values()} == {2}
    assert by_index[0]["tasks"] == ["processor"] and by_index[1]["tasks"] == []
    assert proc.pid not in seen  # the supervisor itself answers nothing


def test_events_ingested_through_either_worker_reach_the_features(server):
    _, base, _, _ = server
    now = dt.datetime.now(dt.UTC).isoformat()
    for i in range(6):  # new connections: both workers append to the one log
        answer = httpx.post(
            f"{base}/v1/events/visits",
            json=[{"user_id": "newcomer", "device": "web", "ts": now, "event_id": f"n{i}"}],
            headers={"connection": "close"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
    deadline, value = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        answer = httpx.get(f"{base}/v1/features?user_id=newcomer&features=visits_30d", timeout=10)
        value = answer.json()["results"][0]["visits_30d"]
        if value == 6:
            break
        time.sleep(0.2)
    assert value == 6  # processed by the one processor, in worker 0


def test_metrics_add_up_every_workers_predictions_whichever_answers(server):
    _, base, _, _ = server
    before = _served_total(base)
    made = sum(len(_predict(base, [f"u{i}", f"u{i + 1}"])) for i in range(0, 30, 2))
    totals = {_served_total(base) for _ in range(6)}  # scrapes reach either worker
    assert totals == {before + made}


def test_grpc_is_served_by_the_workers_on_one_port(server):
    _, base, grpc_port, _ = server
    request = inference_pb2.ModelInferRequest(model_name="risk")
    tensor = request.inputs.add(name="user_id", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend([b"u1", b"u2"])
    for _ in range(4):
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            answer = inference_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                request, timeout=10
            )
        ids = next(o for o in answer.outputs if o.name == "prediction_id")
        ANSWERED.extend(b.decode() for b in ids.contents.bytes_contents)
    http = httpx.post(f"{base}/v1/predict/risk", json={"entities": [{"user_id": "u1"}]})
    scores = next(o for o in answer.outputs if o.name == "score").contents.fp64_contents
    assert scores[0] == pytest.approx(http.json()["predictions"][0]["score"])


def test_a_worker_that_dies_is_started_again(server):
    _, base, _, proc = server
    before = _workers(base)
    second = next(pid for pid, w in before.items() if w["index"] == 1)
    os.kill(second, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            now = _workers(base, tries=50)
        except httpx.HTTPError:
            now = {}  # a connection the dead worker had accepted
        if len(now) == 2 and second not in now:
            break
        time.sleep(0.2)
    assert len(now) == 2 and second not in now, now
    assert proc.poll() is None
    assert len(_predict(base, ["u3"])) == 1


def test_sigterm_to_the_supervisor_drains_every_worker(server):
    folder, base, _, proc = server
    stop = threading.Event()

    def client(n: int) -> None:  # keep-alive connections: each stays on one worker
        with httpx.Client(base_url=base, timeout=10) as http:
            while not stop.is_set():
                try:
                    answer = http.post(
                        "/v1/predict/risk", json={"entities": [{"user_id": f"u{n}"}]}
                    )
                except httpx.HTTPError:
                    return
                if answer.status_code != 200:
                    return
                ANSWERED.extend(p["prediction_id"] for p in answer.json()["predictions"])

    clients = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in clients:
        t.start()
    deadline = time.monotonic() + 20
    while len(ANSWERED) < 600 and time.monotonic() < deadline:
        time.sleep(0.05)  # under load, on both workers
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    stop.set()
    for t in clients:
        t.join(timeout=30)
    assert code == 0
    with Project(folder) as p:
        records = p.log.read("predictions", 0, 10_000_000)
    logged = {orjson.loads(r.payload)["prediction_id"] for r in records}
    missing = set(ANSWERED) - logged
    assert len(ANSWERED) >= 600 and not missing, f"{len(missing)} of {len(ANSWERED)} not logged"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/healthz", timeout=2)


def test_a_worker_that_cannot_start_stops_the_server_with_the_reason(server):
    folder = server[0]
    with socket.socket() as taken:  # a gRPC port another program holds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        grpc_port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "headwater", "serve", "-p", str(folder)]
            + ["--port", str(free_port()), "--workers", "2", "--grpc-port", str(grpc_port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert f"cannot serve gRPC on 127.0.0.1:{grpc_port}: the port is taken" in done.stderr
    assert "exited while starting" in done.stderr and "Traceback" not in done.stderr
