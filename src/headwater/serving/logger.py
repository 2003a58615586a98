"""Prediction logging: every prediction appended to the ``predictions`` stream of the log.

Appends are batched by a background thread (one durable commit for up to ``batch`` records or
every ``interval`` seconds) so that logging adds no fsync to a request's latency; ``flush``
waits until everything logged so far is durable, and runs at shutdown.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import orjson

from headwater.log.base import Log, NewRecord
from headwater.serving.routing import PREDICTIONS_STREAM


class PredictionLogger:
    def __init__(self, log: Log, clock: Any, interval: float = 0.05, batch: int = 5000) -> None:
        self._log, self._clock, self._interval, self._batch = log, clock, interval, batch
        self._queue: queue.Queue[dict[str, Any] | threading.Event] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="prediction-logger", daemon=True)
        self._thread.start()
        self.errors = 0

    def log(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._queue.put(record)

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every record logged before the call is durable in the log."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def _run(self) -> None:
        while True:
            pending: list[dict[str, Any]] = []
            waiters: list[threading.Event] = []
            item = self._queue.get()
            while True:
                if isinstance(item, threading.Event):
                    waiters.append(item)
                else:
                    pending.append(item)
                if len(pending) >= self._batch:
                    break
                try:
                    item = self._queue.get(timeout=self._interval if not waiters else 0)
                except queue.Empty:
                    break
            self._write(pending)
            for w in waiters:
                w.set()

    def _write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        rows = [NewRecord(r["prediction_id"], r["ts_us"], orjson.dumps(r)) for r in records]
        try:
            self._log.append(PREDICTIONS_STREAM, rows, self._clock())
        except Exception:  # noqa: BLE001 - logging must never take serving down; counted
            self.errors += len(rows)
