"""Prediction logging: every prediction appended to the ``predictions`` stream of the log.

A request serializes its records and hands them over with a deque append. A writer thread
sends what waits, every ``interval`` seconds, to a writer process (``log_writer``) that
appends it to the log: one durable append per interval, and none of the log's work on the
serving process's GIL (appending from a thread of this process stalled the requests beside
it: in-process p99 was 5× p50, 2.3× without logging). ``flush`` waits until everything
logged so far is durable; ``close`` flushes and stops the writer process. A log given only as
an object (no URL to open it again: tests, in-memory logs) is appended to by the thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from headwater.log.base import Log
from headwater.serving.log_writer import ACK, BATCH, HEADER, SYNC, frame, opening, records
from headwater.serving.routing import PREDICTIONS_STREAM

_LOGGER = logging.getLogger("headwater.serving")
_PIPE_BYTES = 1 << 20  # an interval's records fit in the pipe: the thread's write returns at once

# The writer process imports the log's modules only: the package's __init__ (pandas, the
# client, the project) would take 0.6 s of CPU at every start instead of 0.08 s.
_START = """
import importlib.util, sys, types
spec = importlib.util.find_spec("headwater")
package = types.ModuleType("headwater")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["headwater"] = package
from headwater.serving.log_writer import main
main()
"""


@dataclass(frozen=True)
class LogAddress:
    """Where a writer process opens the log: the URL and root the project opened it from."""

    url: str
    root: Path


class PredictionLogger:
    """Requests hand their records over with a deque append (no lock, no wake-up: waking the
    writer per request cost more CPU than scoring); the writer wakes every ``interval``
    seconds, or at once when ``batch`` records wait or someone flushes. Without a request
    for ``idle`` seconds the writer process stops; the next record starts it again."""

    def __init__(
        self,
        log: Log,
        clock: Any,
        interval: float = 0.05,
        batch: int = 5000,
        address: LogAddress | None = None,
        idle: float = 30.0,
    ) -> None:
        self._clock, self._interval, self._batch, self._idle = clock, interval, batch, idle
        self._sink: _Sink = _WriterProcess(address) if address else _ThreadAppends(log)
        self._pending: deque[bytes] = deque()
        self._waiting: deque[threading.Event] = deque()
        self._wake = threading.Event()
        self._last = time.monotonic()
        self._dropped = 0  # records a failure of this process's own lost
        self._thread = threading.Thread(target=self._run, name="prediction-logger", daemon=True)
        self._thread.start()

    @property
    def errors(self) -> int:
        """Predictions that could not be logged (known once a flush has returned)."""
        return self._sink.errors + self._dropped

    def log(self, records: list[dict[str, Any]]) -> None:
        # Serialized here, by the caller (about a microsecond each): the writer thread only
        # joins and sends them. Prediction ids are fresh: the log need not look for copies.
        self._pending.extend(
            frame(r["prediction_id"], r["ts_us"], _json(r)) for r in records
        )  # deque appends are atomic: safe from any thread
        if len(self._pending) >= self._batch:
            self._wake.set()

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every record logged before the call is durable in the log."""
        self._handover(threading.Event(), timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then stop the writer process (a later record starts it again)."""
        self._handover(_Close(), timeout)

    def _handover(self, done: threading.Event, timeout: float) -> None:
        self._waiting.append(done)  # after the caller's records: they are in _pending
        self._wake.set()
        done.wait(timeout)

    def _run(self) -> None:
        while True:
            # one wait per interval: a busy server's records of that interval go in one
            # durable append (per-append costs dominate; a drain per request cost 50% more)
            self._wake.wait(self._interval)
            self._wake.clear()
            # the waiters first: whatever was logged before them is then in _pending
            waiters = [self._waiting.popleft() for _ in range(len(self._waiting))]
            try:
                self._write_pending()
                if waiters:  # released once everything before them is durable
                    self._sink.sync()
                    if any(isinstance(w, _Close) for w in waiters):
                        self._sink.stop()
                if self._sink.running and time.monotonic() - self._last > self._idle:
                    self._sink.stop()
            except Exception:  # noqa: BLE001 - the thread must outlive any failure; counted
                _LOGGER.exception("the prediction logger failed (its records are counted)")
            finally:
                for w in waiters:
                    w.set()

    def _write_pending(self) -> None:
        pending, left = self._pending, len(self._pending)
        while left:
            frames = [pending.popleft() for _ in range(min(left, self._batch))]
            left -= len(frames)
            try:
                self._sink.write(frames, self._clock())
            except Exception:
                self._dropped += len(frames)
                raise
            self._last = time.monotonic()


class _Close(threading.Event):
    """A flush that also stops the writer process."""


class _Sink(Protocol):
    @property
    def errors(self) -> int: ...
    @property
    def running(self) -> bool: ...

    def write(self, frames: list[bytes], ingest_time: int) -> None: ...
    def sync(self) -> None: ...
    def stop(self) -> None: ...


class _ThreadAppends:
    """Appends from the logger's thread: for a log that cannot be opened again elsewhere."""

    running = False

    def __init__(self, log: Log) -> None:
        self._log = log
        self.errors = 0

    def write(self, frames: list[bytes], ingest_time: int) -> None:
        batch = records(b"".join(frames))
        try:
            self._log.append(PREDICTIONS_STREAM, batch, ingest_time)
        except Exception:  # noqa: BLE001 - logging must never take serving down; counted
            self.errors += len(batch)

    def sync(self) -> None:
        return None  # an append is durable when it returns

    def stop(self) -> None:
        return None


class _WriterProcess:
    """The writer process (``log_writer``), started at the first record. If it dies, the
    records sent since its last sync are counted as errors (some may have been written)
    and the next batch starts a new one."""

    def __init__(self, address: LogAddress) -> None:
        self._address = address
        self._process: subprocess.Popen[bytes] | None = None
        self._syncs = self._unsynced = self._failed_before = self._failed = self._lost = 0

    @property
    def running(self) -> bool:
        return self._process is not None

    @property
    def errors(self) -> int:
        return self._failed_before + self._failed + self._lost

    def write(self, frames: list[bytes], ingest_time: int) -> None:
        body = b"".join(frames)
        self._unsynced += len(frames)
        try:
            pipe = _stdin(self._process or self._start())
            pipe.write(HEADER.pack(BATCH, len(body), ingest_time) + body)
            pipe.flush()
        except OSError:
            self._gone("could not be sent")

    def sync(self) -> None:
        process = self._process
        if process is None:
            return
        self._syncs += 1
        try:
            pipe = _stdin(process)
            pipe.write(HEADER.pack(SYNC, self._syncs, 0))
            pipe.flush()
            answer = _stdout(process).read(ACK.size)
        except OSError:
            answer = b""
        if len(answer) < ACK.size:
            self._gone("were sent to a writer process that died")
            return
        _, self._failed = ACK.unpack(answer)
        self._unsynced = 0

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        self.sync()
        if self._process is None:
            return  # it died: counted by sync
        self._process = None
        self._failed_before, self._failed = self._failed_before + self._failed, 0
        _close(_stdin(process))
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        _close(_stdout(process))

    def _start(self) -> subprocess.Popen[bytes]:
        # this package's source folder first: the writer imports the same code
        source = str(Path(__file__).resolve().parents[2])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p),
        }
        address = self._address
        process = subprocess.Popen(
            [sys.executable, "-c", _START],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._process = process
        _widen(_stdin(process))
        _stdin(process).write(opening(address.url, str(address.root), PREDICTIONS_STREAM))
        return process

    def _gone(self, what: str) -> None:
        process, self._process = self._process, None
        lost, self._unsynced = self._unsynced, 0
        self._lost += lost
        self._failed_before, self._failed = self._failed_before + self._failed, 0
        _LOGGER.error("%d predictions %s (the log writer exited); counted as errors", lost, what)
        if process is not None:
            process.kill()
            process.wait()
            _close(_stdin(process))
            _close(_stdout(process))


def _stdin(process: subprocess.Popen[bytes]) -> IO[bytes]:
    assert process.stdin is not None  # opened with stdin=PIPE
    return process.stdin


def _stdout(process: subprocess.Popen[bytes]) -> IO[bytes]:
    assert process.stdout is not None  # opened with stdout=PIPE
    return process.stdout


def _close(pipe: IO[bytes]) -> None:
    """Close a pipe to the writer process, even if it is gone: closing flushes what is still
    buffered, and that write fails on a pipe whose reader died (the descriptor is closed
    anyway; those records are already counted)."""
    with contextlib.suppress(OSError):
        pipe.close()


def _widen(pipe: IO[bytes]) -> None:
    """A 1 MiB pipe (Linux) instead of 64 KiB: an interval's batch is written at once."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
    except (ImportError, OSError):
        pass  # another OS, or above the system's limit: writes wait for the writer instead


def _json(record: dict[str, Any]) -> bytes:
    """A record as JSON, whatever an in-process caller put in its context or features:
    numpy values as numbers, anything else JSON has no type for as its text."""
    return orjson.dumps(
        record, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    )
