"""The API is its documentation: schemathesis fuzzes every operation of a running server
against its own OpenAPI document, with every check, positive and negative data, with auth on
and off, a fixed seed and a cap on examples (`schemathesis.toml` beside this file lists the
two bounds a static schema cannot state, each documented as its 422)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from headwater import Project
from tests.conftest import write_project
from tests.e2e.servers import free_port, start_server
from tests.unit.serving.test_predict import SERVICES
from tests.unit.training.conftest import visits

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def _served(folder: Path, server: str) -> tuple[subprocess.Popen, str, str | None]:
    write_project(folder, SERVICES)
    port = free_port()
    with open(folder / "headwater.toml", "a") as toml:
        toml.write(f"\n[server]\nport = {port}\n{server}")
    key = None
    with Project(folder) as p:
        p.ingest("visits", visits(users=60, end=dt.datetime.now(dt.UTC)))
        p.process()
        version = p.train("churn").version
        p.promote("churn", version)
        p.promote("churn", version, alias="challenger")  # every service ready: no 503
        if "keys" in server:
            key = p.create_key("ops", ["admin"])[1]
    return start_server(folder, port), f"http://127.0.0.1:{port}", key


@pytest.mark.parametrize(
    "server", ['auth = "none"\n', 'auth = "keys"\nrate_limit = 1000\n'], ids=["open", "keys"]
)
def test_every_operation_matches_its_documentation(tmp_path, server):
    proc, url, key = _served(tmp_path / "p", server)
    try:
        command = [
            str(SCHEMATHESIS),
            "--config-file",
            str(CONFIG),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--mode",
            "all",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--workers",
            "1",
            "--no-color",
            "--generation-database",
            "none",
            *(["--header", f"Authorization: Bearer {key}"] if key else []),
        ]
        run = subprocess.run(command, capture_output=True, text=True, timeout=170)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failures" not in run.stdout.splitlines()[-1]
