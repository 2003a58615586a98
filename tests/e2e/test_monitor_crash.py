"""The monitor's ledger survives SIGKILL at any point: killed again and again while it consumes
predictions and feedback and matures labels, it ends equal to an uninterrupted run's."""

from __future__ import annotations

import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from headwater import Project
from headwater.definitions.types import to_micros
from headwater.monitoring.ledger import Ledger
from tests.conftest import write_project
from tests.e2e.servers import headwater
from tests.unit.training.conftest import DEFINITIONS, NOW, visits

SERVICES = (
    DEFINITIONS
    + """
from headwater import Feedback, Service

outcomes = Stream("offer_outcomes", fields={"prediction_id": "string", "converted": "int",
                                            "ts": "timestamp"},
                  key="prediction_id", time="ts", owner="growth", description="Conversions")
services = [
    Service("risk", model=models[0], owner="growth", description="Labelled by the model"),
    Service("offers", model=models[0], feedback=Feedback(outcomes, field="converted"),
            owner="growth", description="Labelled by feedback"),
]
"""
)
# One progress line per committed batch: the test kills the driver between and inside them.
DRIVER = """
import sys
from headwater import Project
from headwater.monitoring.ledger import Ledger

folder, now, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with Project(folder, clock=lambda: now) as p:
    done = Ledger(p.monitor_context(), batch=batch).advance(
        progress=lambda d: print("progress", d.predictions, d.feedback, d.matured, flush=True)
    )
    print("done", done.consumed, flush=True)
"""
BATCH = 500
# Where each run is killed: a moment after it commits its first batch of predictions, of
# feedback, or of matured labels (the three things the ledger consumes).
PHASES = {"predictions": 1, "feedback": 2, "matured": 3}
KILLS = ("predictions", "predictions", "feedback", "feedback", "matured", "matured", "matured")


def _build(folder: Path) -> int:
    """A project with 24k logged predictions (16k to label by horizon, 8k by feedback),
    feedback for half the latter and corrections; returns the number of records to consume."""
    clock = {"t": NOW - timedelta(days=10)}
    with Project(write_project(folder, SERVICES), clock=lambda: clock["t"]) as p:
        p.ingest("visits", visits())
        p.process()
        p.promote("churn", p.train("churn").version)
        served = []
        for service, n in (("risk", 16_000), ("offers", 8_000)):
            for start in range(0, n, 2_000):
                rows = [{"user_id": f"u{i % 150}"} for i in range(start, start + 2_000)]
                served += p.serving.predict(service, rows, "test")
        offers = [x for x in served if x.service == "offers"]
        clock["t"] = NOW - timedelta(days=9)
        rng = np.random.default_rng(0)
        events = [
            {
                "prediction_id": x.prediction_id,
                "converted": int(rng.random() < x.score),
                "ts": NOW - timedelta(days=9, hours=i % 20 + 1),
            }
            for i, x in enumerate(offers[::2])
        ]
        events += [{**e, "converted": 1 - e["converted"], "ts": clock["t"]} for e in events[::9]]
        p.ingest("offer_outcomes", events)
        return len(served) + len(events) + 16_000  # every risk prediction matures by NOW


def _lines(proc: subprocess.Popen) -> queue.Queue:
    out: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            out.put(line.split())
        out.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return out


def _consuming(line: list[str]) -> str | None:
    """What a progress line says the driver is consuming now: the last of the three things
    (they are consumed in order) that it has committed a batch of."""
    busy = [phase for phase, column in PHASES.items() if int(line[column]) > 0]
    return busy[-1] if line[0] == "progress" and busy else None


def _run_once(proc: subprocess.Popen, rnd: random.Random, phase: str | None) -> list[list[str]]:
    """Wait until the driver commits a batch of ``phase`` (or of a later thing, when a
    previous run already consumed all of ``phase``), then SIGKILL it a random moment later:
    within about one batch's time, so the kill lands inside or between batches whatever
    the machine's speed. With no phase, or when it finishes first, let it finish. Answers
    what it said."""
    lines, said = _lines(proc), []
    order = list(PHASES)
    last = time.perf_counter()
    ended = False
    while phase is not None:
        line = lines.get(timeout=60)
        if line is None:
            ended = True
            break
        said.append(line)
        now, gap = time.perf_counter(), time.perf_counter() - last
        last = now
        current = _consuming(line)
        if current is not None and order.index(current) >= order.index(phase):
            time.sleep(rnd.uniform(0, min(1.5 * gap, 0.25)))
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(60)
    while not ended and (line := lines.get(timeout=30)) is not None:
        said.append(line)
    return said


def test_sigkill_while_consuming_resumes_to_the_same_ledger(tmp_path):
    folder, reference = tmp_path / "p", tmp_path / "reference"
    total = _build(folder)
    shutil.copytree(folder, reference)
    now = to_micros(NOW)
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DRIVER))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(driver), str(folder), str(now), str(BATCH)]
    rnd = random.Random(11)
    killed: list[tuple[str, list[str]]] = []
    for phase in [*KILLS, None]:
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as proc:
            said = _run_once(proc, rnd, phase)
        if proc.returncode == -signal.SIGKILL:
            killed.append((_consuming(said[-1]), said[-1]))
            continue
        assert proc.returncode == 0 and said[-1][0] == "done", said[-3:]
        break
    # every run was killed while the ledger consumed something, each of the three things
    # at least once, and the last run resumed where the killed ones left off
    assert len(killed) == len(KILLS), killed
    assert {phase for phase, _ in killed} == set(PHASES), killed
    assert 0 < int(said[-1][1]) < total

    with Project(reference, clock=lambda: now) as p:
        uninterrupted = Ledger(p.monitor_context(), batch=BATCH * 3)
        assert uninterrupted.advance().consumed == total
        expected = uninterrupted.snapshot()
    with Project(folder, clock=lambda: now) as p:
        assert Ledger(p.monitor_context()).snapshot() == expected
    assert len(expected["outcomes"]) == 24_000

    # The command itself (on the system clock): advances (nothing left), then reports.
    days = (time.time() - NOW.timestamp()) / 86_400 + 30
    with headwater(
        "monitor",
        "--project",
        str(folder),
        "--days",
        str(days),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "ledger: 0 predictions, 0 feedback events and 0 matured labels" in out
    assert "performance by day" in out and "│ total " in out
