"""Running headwater commands as real processes, on loopback, for end-to-end tests."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def headwater(*args: str, **kwargs) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "headwater", *args], env=env, **kwargs)


def start_server(
    project: Path, port: int, *extra: str, scheme: str = "http", verify: bool | str = True
) -> subprocess.Popen:
    log = project / "server.log"
    with log.open("ab") as sink:
        proc = headwater(
            "serve",
            "--project",
            str(project),
            "--port",
            str(port),
            *extra,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            url = f"{scheme}://127.0.0.1:{port}/healthz"
            context = (
                ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
            )
            if httpx.get(url, timeout=1, verify=context).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start in 30 s")
