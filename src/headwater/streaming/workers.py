"""Worker processes of continuous processing: several processes, each a member of the log's
consumer group, sharing its partitions; one that dies leaves its partitions to the others."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable
from typing import Any

from headwater.streaming.processor import ProcessingError, ProcessStats

_LOGGER = logging.getLogger("headwater.project")

# What a worker runs: ``target(stop, *args)`` processes until ``stop`` is set. It must be a
# module-level function (workers are spawned, so it is pickled by reference).
Target = Callable[..., ProcessStats]


def run_workers(
    target: Target, args: tuple[Any, ...], workers: int, stop: threading.Event
) -> ProcessStats:
    """Run ``workers`` spawned processes of ``target`` until ``stop`` is set; the events and
    batches they processed, added up."""
    context = multiprocessing.get_context("spawn")
    done = context.Event()
    results = context.SimpleQueue()
    processes = [
        context.Process(
            target=_worker,
            args=(target, args, done, results),
            name=f"headwater-worker-{i}",
            daemon=True,
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        running = set(processes)
        while running and not stop.wait(0.5):
            for process in [p for p in running if not p.is_alive()]:
                running.discard(process)
                _LOGGER.warning(
                    "%s exited (code %s); the others take over its partitions",
                    process.name,
                    process.exitcode,
                )
        if not running:
            raise ProcessingError(f"all {workers} workers exited; see their errors above")
    finally:
        done.set()
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.terminate()
    total = ProcessStats()
    while not results.empty():
        events, batches = results.get()
        total.events += events
        total.batches += batches
    return total


def _worker(target: Target, args: tuple[Any, ...], done: Any, results: Any) -> None:
    """One process of ``run_workers``: it stops when ``done`` is set or its parent is gone,
    and leaves Ctrl-C to the parent (which then sets ``done``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    stop = threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            if parent is not None and not parent.is_alive():
                break
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    stats = target(stop, *args)
    results.put((stats.events, stats.batches))
