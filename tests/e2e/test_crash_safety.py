"""Nothing acknowledged is lost, and processing survives SIGKILL at any point."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import threading
import time

import httpx

from headwater import Project
from headwater.definitions.types import from_micros
from headwater.log.base import DEAD_LETTER_STREAM
from headwater.log.embedded import EmbeddedLog
from tests.e2e.servers import free_port, headwater, start_server

SENDERS = 3
BATCH = 20


def _batch(sender: int, n: int) -> list[dict]:
    now = time.time()
    return [
        {
            "event_id": f"s{sender}-b{n}-{i}",
            "user_id": f"u{(n * BATCH + i) % 50}",
            "amount": float(i),
            "status": "paid",
            "ts": now - 30,
        }
        for i in range(BATCH)
    ]


def test_sigkill_during_ingest_loses_no_acknowledged_event(small_project):
    port = free_port()
    server = start_server(small_project, port)
    acked: list[str] = []
    sent: list[list[dict]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def send(sender: int) -> None:
        with httpx.Client(timeout=5) as client:
            for n in range(100_000):
                if stop.is_set():
                    return
                events = _batch(sender, n)
                with lock:
                    sent.append(events)
                try:
                    r = client.post(f"http://127.0.0.1:{port}/v1/events/orders", json=events)
                except httpx.HTTPError:
                    return  # the server died mid-request: this batch is not acknowledged
                assert r.status_code == 200, r.text
                assert r.json()["accepted"] + r.json()["duplicates"] == BATCH
                with lock:
                    acked.extend(e["event_id"] for e in events)

    threads = [threading.Thread(target=send, args=(s,)) for s in range(SENDERS)]
    for t in threads:
        t.start()
    while len(acked) < 2000:
        time.sleep(0.01)
    server.send_signal(signal.SIGKILL)  # no chance to flush or clean up
    server.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 2000

    log = EmbeddedLog(small_project / ".headwater" / "log.db")
    ids = [r.event_id for r in log.read("orders", 0, 10_000_000)]
    log.close()
    assert len(ids) == len(set(ids)), "an event was appended twice"
    missing = set(acked) - set(ids)
    assert not missing, f"{len(missing)} acknowledged events were lost"

    # Clients retry everything they sent after the restart: each event ends up exactly once.
    server = start_server(small_project, port)
    try:
        with httpx.Client(timeout=10) as client:
            for events in sent:
                r = client.post(f"http://127.0.0.1:{port}/v1/events/orders", json=events)
                assert r.status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    log = EmbeddedLog(small_project / ".headwater" / "log.db")
    ids = [r.event_id for r in log.read("orders", 0, 10_000_000)]
    offsets = [r.offset for r in log.read("orders", 0, 10_000_000)]
    assert log.end_offset(DEAD_LETTER_STREAM) == 0
    log.close()
    assert sorted(ids) == sorted(e["event_id"] for batch in sent for e in batch)
    assert offsets == list(range(len(offsets)))


def _all_values(project: Project, at) -> dict:
    users = [f"u{i}" for i in range(60)]
    names = project.catalog.names
    return {
        u: v
        for u, v in zip(
            users,
            project.online_features([{"user_id": u} for u in users], names, at=at),
            strict=True,
        )
    }


def test_processor_killed_at_random_points_reaches_the_same_state(small_project, tmp_path):
    rnd = random.Random(20261123)
    with Project(small_project) as p:
        now = time.time()
        events = [
            {
                "event_id": f"e{i}",
                "user_id": f"u{rnd.randrange(60)}",
                "amount": rnd.randrange(1, 400) / 4,
                "status": rnd.choice(["paid", "failed"]),
                "ts": now - rnd.uniform(0, 10 * 86400),
            }
            for i in range(60_000)
        ]
        assert p.ingest("orders", events).accepted == 60_000
        p.ingest("clicks", [{"user_id": f"u{i % 60}", "ts": now - i} for i in range(3000)])
    reference = tmp_path / "reference"
    shutil.copytree(small_project, reference)
    with Project(reference) as p:
        p.process()

    kills = 0
    for _ in range(12):  # kill at random points until it has been killed five times
        if kills >= 5:
            break
        # commits every 0.2 s: kills land between commits, with batches processed since
        proc = headwater(
            "process", "--project", str(small_project), "--batch-size", "300",
            "--commit-seconds", "0.2",
        )  # fmt: skip
        time.sleep(rnd.uniform(0.3, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 3, "the processor finished before it could be killed; use more events"
    done = headwater("process", "--project", str(small_project), "--batch-size", "300")
    assert done.wait(timeout=300) == 0

    with Project(small_project) as crashed, Project(reference) as clean:
        assert crashed.processor.lag() == clean.processor.lag()
        assert all(v == 0 for v in crashed.processor.lag().values())
        at = clean.now()
        got, want = _all_values(crashed, from_micros(at)), _all_values(clean, from_micros(at))
        assert got == want
        assert any(v["spend_lifetime"] for v in want.values())
        for plan in clean.catalog.plans:
            users = [f"u{i}" for i in range(60)]
            states = [plan.decode(b) for b in crashed.online_store.get_many(plan.id, users)]
            clean_states = [plan.decode(b) for b in clean.online_store.get_many(plan.id, users)]
            # each state was expired when it was last written, by the wall clock, which moved
            # between the two runs (a tile can age out of a window meanwhile): expire both at
            # the same instant, then every tile left must be the same
            for state in (*states, *clean_states):
                plan.expire(state, at)
            assert states == clean_states


def test_ctrl_c_stops_a_forever_processor_and_keeps_what_it_processed(small_project):
    rnd = random.Random(7)
    now = time.time()
    with Project(small_project) as p:
        events = [
            {
                "user_id": f"u{rnd.randrange(60)}",
                "amount": 1.0,
                "status": "paid",
                "ts": now - rnd.uniform(0, 86400),
            }
            for _ in range(20_000)
        ]
        assert p.ingest("orders", events).accepted == 20_000
        before = sum(p.processor.lag().values())
    proc = headwater(
        "process", "--forever", "--project", str(small_project), "--batch-size", "200",
        "--commit-seconds", "3600", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # the signal handler is set before this line is printed
        lines.append(line)
        if "processing" in line:
            break
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + out
    assert "stopping after the batch in flight" in out
    assert "Traceback" not in out
    with Project(small_project) as p:
        assert sum(p.processor.lag().values()) < before  # committed at the stop (or caught up)
