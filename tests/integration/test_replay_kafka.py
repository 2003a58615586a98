"""Replay on Kafka + Redis + PostgreSQL: the CLI replays production into staging, re-keyed,
with production-quality results there; a replay killed with SIGKILL and run again leaves each
event exactly once in the target's Kafka topics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from headwater import Project
from headwater.environments.replay import CHECKPOINTS
from tests.environments_shop import (
    POSTGRES,
    REDIS,
    drop_namespaces,
    fill,
    records,
    same_results,
    users,
    write,
)
from tests.unit.training.conftest import NOW

SECRETS = {
    "HEADWATER_PII_SECRET_PRODUCTION": "production-secret-" + "p" * 32,
    "HEADWATER_PII_SECRET_STAGING": "staging-secret-" + "s" * 32,
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory, kafka_broker):
    name = f"rp{uuid.uuid4().hex[:8]}"
    stores = f"""
[stores]
log = "{kafka_broker.url(partitions=2, idle_ms=50)}"
online = "{REDIS}"
metadata = "{POSTGRES}"
monitor = "{POSTGRES}"
"""
    folder = write(
        tmp_path_factory.mktemp(name) / name, stores, ["production", "staging", "killed"], name
    )
    mp = pytest.MonkeyPatch()
    for variable, value in SECRETS.items():
        mp.setenv(variable, value)
    with Project(folder, env="production", clock=lambda: NOW) as production:
        fill(production, users=60)
        yield folder, production
    mp.undo()
    drop_namespaces(name)


def _cli(folder, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "headwater", "replay", *args, "-p", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **SECRETS},
    )


def test_the_cli_replays_production_into_staging_with_production_quality_results(shop):
    folder, production = shop
    proc = _cli(folder, "--from", "production", "--to", "staging", "--rekey")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    total = sum(len(records(production, s)) for s in ("visits", "signups", "purchases"))
    assert f"copied {total} events" in out and "events/s" in out
    assert "next: headwater process --env staging" in out
    with Project(folder, env="staging", clock=lambda: NOW) as staging:
        assert records(staging, "visits") == records(production, "visits")
        staging.process()
        same_results(production, staging, users(production))
    again = _cli(folder, "--from", "production", "--to", "staging", "--rekey")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "copied 0 events" in out


def test_a_replay_killed_with_sigkill_resumes_and_copies_each_event_once(shop):
    folder, production = shop
    source = records(production, "visits")
    args = ("--from", "production", "--to", "killed", "--streams", "visits", "--batch-size", "1")
    proc = _cli(folder, *args)
    with Project(folder, env="killed") as target:
        deadline = time.monotonic() + 120
        # killed at its first batches: a checkpoint in PostgreSQL is seen at once (a Kafka
        # end offset takes longer to ask than the whole replay of batches of 5 took)
        while not target.metadata.get_records(CHECKPOINTS) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "the replay ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)  # reaped, its pipes closed
        assert 0 < len(records(target, "visits")) < len(source)
        again = _cli(folder, *args[:-1], "500")  # the batch size is not an option of record
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, out + err
        assert records(target, "visits") == source, out  # every event, none twice
