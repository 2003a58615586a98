"""Serving from several processes on one port: a supervisor binds the listening socket,
spawns the workers that accept on it, forwards SIGTERM/SIGINT to them (each finishes its
requests in flight and writes every logged prediction before it exits) and starts again a
worker that dies. Prometheus figures are kept in files shared by the workers, so
``/metrics`` answers the same totals whichever worker takes the scrape."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headwater.errors import HeadwaterError

_LOGGER = logging.getLogger("headwater.serving")

# prometheus_client reads it when it is imported: set before the workers are spawned
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"

# What a worker runs: ``target(worker, sock, ready, *args)`` serves on ``sock`` until it gets
# SIGTERM, and sets ``ready`` once it accepts connections. A module-level function (workers
# are spawned, so it is pickled by reference).
Target = Callable[..., None]

START_SECONDS = 120  # to open the project, load what it needs and accept connections
STOP_SECONDS = 30  # to finish the requests in flight and flush, after SIGTERM
CRASHES = 5  # a worker that dies this many times in a minute stops the server


@dataclass(frozen=True)
class Worker:
    """Which of the server's processes this is: worker 0 runs the background tasks."""

    index: int
    of: int

    @property
    def runs_tasks(self) -> bool:
        return self.index == 0


@dataclass
class _Slot:
    worker: Worker
    process: Any = None
    ready: Any = None
    started: float = 0.0
    crashes: list[float] = field(default_factory=list)


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port``, shared by the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def serve_workers(
    target: Target,
    args: tuple[Any, ...],
    workers: int,
    sock: socket.socket,
    announce: Callable[[], None] | None = None,
) -> None:
    """Run ``workers`` spawned processes of ``target`` on ``sock`` until SIGTERM or SIGINT
    reaches this process; ``announce`` is called once every worker accepts connections.
    A worker that dies is started again; one that dies ``CRASHES`` times in a minute, or
    fails to start, stops the others and raises."""
    if workers < 1:
        raise HeadwaterError(f"workers must be at least 1, not {workers}")
    metrics = tempfile.mkdtemp(prefix="headwater-metrics-")
    previous = os.environ.get(METRICS_DIR)
    os.environ[METRICS_DIR] = metrics
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for signum in handlers:
        signal.signal(signum, lambda *_: stopping.set())
    slots = [_Slot(Worker(i, workers)) for i in range(workers)]

    def start(slot: _Slot) -> None:
        slot.ready = context.Event()
        slot.process = context.Process(
            target=_worker,
            args=(target, slot.worker, sock, slot.ready, args),
            name=f"headwater-serve-{slot.worker.index}",
        )
        slot.started = time.monotonic()
        slot.process.start()

    try:
        for slot in slots:
            start(slot)
        _wait_ready(slots, stopping)
        if announce is not None and not stopping.is_set():
            announce()
        while not stopping.wait(0.2):
            for slot in slots:
                if slot.process.is_alive():
                    continue
                now = time.monotonic()
                slot.crashes = [t for t in slot.crashes if now - t < 60] + [now]
                if len(slot.crashes) >= CRASHES:
                    raise HeadwaterError(
                        f"worker {slot.worker.index} died {CRASHES} times in a minute (last "
                        f"exit code {slot.process.exitcode}); see its errors above"
                    )
                _LOGGER.warning(
                    "worker %d exited (code %s): starting it again",
                    slot.worker.index,
                    slot.process.exitcode,
                )
                start(slot)
    finally:
        _stop(slots)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        if previous is None:
            os.environ.pop(METRICS_DIR, None)
        else:
            os.environ[METRICS_DIR] = previous
        shutil.rmtree(metrics, ignore_errors=True)


def _wait_ready(slots: list[_Slot], stopping: threading.Event) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not all(slot.ready.is_set() for slot in slots):
        for slot in slots:
            if not slot.process.is_alive():
                raise HeadwaterError(
                    f"worker {slot.worker.index} exited while starting (code "
                    f"{slot.process.exitcode}); see its error above"
                )
        if time.monotonic() > deadline:
            raise HeadwaterError(f"the workers did not start in {START_SECONDS} s")
        if stopping.wait(0.05):
            return


def _stop(slots: list[_Slot]) -> None:
    """SIGTERM to every worker, then wait for each to finish (or kill it after
    ``STOP_SECONDS``)."""
    running = [s.process for s in slots if s.process is not None and s.process.is_alive()]
    for process in running:
        os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in running:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            _LOGGER.warning("%s did not stop in %d s: killed", process.name, STOP_SECONDS)
            process.kill()
            process.join()


def _worker(target: Target, worker: Worker, sock: socket.socket, ready: Any, args: Any) -> None:
    """One process of ``serve_workers``. Ctrl-C reaches the whole process group: the
    supervisor alone acts on it (by sending SIGTERM). A worker whose supervisor is gone
    stops as if it had been sent SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()

    def watch() -> None:
        while parent is not None and parent.is_alive():
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()
    try:
        target(worker, sock, ready, *args)
    except HeadwaterError as exc:  # a refusal with what to do: no traceback
        print(f"error: worker {worker.index}: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def multiprocess_metrics() -> bool:
    """Whether this process is one of several workers sharing their metrics in files."""
    return bool(os.environ.get(METRICS_DIR))
