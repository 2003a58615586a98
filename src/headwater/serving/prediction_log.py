"""Prediction logging: every prediction appended to the ``predictions`` stream of the log.

Appends are batched by a background thread (one durable commit for up to ``batch`` records or
every ``interval`` seconds) so that logging adds no fsync to a request's latency; ``flush``
waits until everything logged so far is durable, and runs at shutdown.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import orjson

from headwater.log.base import Log, NewRecord
from headwater.serving.routing import PREDICTIONS_STREAM


class PredictionLogger:
    """Requests hand their records over with a deque append (no lock, no wake-up: waking the
    writer per request cost more CPU than scoring); the writer wakes every ``interval``
    seconds, or at once when ``batch`` records wait or someone flushes."""

    def __init__(self, log: Log, clock: Any, interval: float = 0.05, batch: int = 5000) -> None:
        self._log, self._clock, self._interval, self._batch = log, clock, interval, batch
        self._pending: deque[NewRecord | threading.Event] = deque()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-logger", daemon=True)
        self._thread.start()
        self.errors = 0

    def log(self, records: list[dict[str, Any]]) -> None:
        # Serialized here, by the caller (about a microsecond each): the writer thread is
        # left with the log's own work, so it holds the GIL in shorter stretches while
        # requests run beside it. Prediction ids are fresh: the log need not look for
        # earlier copies.
        self._pending.extend(
            NewRecord(r["prediction_id"], r["ts_us"], _json(r), fresh_id=True) for r in records
        )  # deque appends are atomic: safe from any thread
        if len(self._pending) >= self._batch:
            self._wake.set()

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every record logged before the call is durable in the log."""
        done = threading.Event()
        self._pending.append(done)
        self._wake.set()
        done.wait(timeout)

    def _run(self) -> None:
        while True:
            # one wait per interval: a busy server's records of that interval go in one
            # durable append (per-append costs dominate; a drain per request cost 50% more)
            self._wake.wait(self._interval)
            self._wake.clear()
            for _ in range(len(self._pending) // self._batch + 1):
                self._drain()

    def _drain(self) -> None:
        records: list[NewRecord] = []
        waiters: list[threading.Event] = []
        pending = self._pending
        while pending and len(records) < self._batch:
            item = pending.popleft()
            if isinstance(item, threading.Event):
                waiters.append(item)  # set once everything before it is written
            else:
                records.append(item)
        self._write(records)
        for w in waiters:
            w.set()

    def _write(self, records: list[NewRecord]) -> None:
        if not records:
            return
        try:
            self._log.append(PREDICTIONS_STREAM, records, self._clock())
        except Exception:  # noqa: BLE001 - logging must never take serving down; counted
            self.errors += len(records)


def _json(record: dict[str, Any]) -> bytes:
    """A record as JSON, whatever an in-process caller put in its context or features:
    numpy values as numbers, anything else JSON has no type for as its text."""
    return orjson.dumps(
        record, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    )
