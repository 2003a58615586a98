"""The prediction logger's writer process: frames in, durable appends out, syncs answered,
failures counted, and the process stopped on close, when idle, or started again after it died."""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

import orjson
import pytest

from headwater.log.base import NewRecord
from headwater.log.embedded import EmbeddedLog
from headwater.log.ids import new_id
from headwater.serving.log_writer import ACK, BATCH, HEADER, SYNC, frame, records, serve
from headwater.serving.prediction_log import LogAddress, PredictionLogger
from headwater.serving.routing import PREDICTIONS_STREAM


def _batch(rows: list[tuple[str, int, bytes]], ingest: int) -> bytes:
    body = b"".join(frame(*row) for row in rows)
    return HEADER.pack(BATCH, len(body), ingest) + body


def test_frames_round_trip_and_a_body_cut_short_yields_the_records_before_the_cut():
    rows = [("p-1", 10, b'{"a":1}'), ("p-é", 11, b""), ("p-3", 12, b"x" * 300)]
    body = b"".join(frame(*row) for row in rows)
    assert [(r.event_id, r.event_time, r.payload) for r in records(body)] == rows
    assert all(r.fresh_id for r in records(body))
    assert [r.event_id for r in records(body[:-1])] == ["p-1", "p-é"]
    assert records(body[:5]) == []


def test_the_writer_appends_each_batch_answers_syncs_and_counts_failures():
    appended: list[tuple[list[NewRecord], int]] = []

    def append(batch: list[NewRecord], ingest: int) -> None:
        if batch[0].event_id == "bad":
            raise OSError("disk full")
        appended.append((batch, ingest))

    source = io.BytesIO(
        _batch([("a", 1, b"1"), ("b", 2, b"2")], 100)
        + HEADER.pack(SYNC, 1, 0)
        + _batch([("bad", 3, b"3"), ("c", 4, b"4")], 200)
        + HEADER.pack(SYNC, 2, 0)
        + _batch([("d", 5, b"5"), ("e", 6, b"6")], 300)[:-1]  # the server died mid-write
    )
    answers = io.BytesIO()
    failed = serve(source, answers, append)
    assert failed == 2
    assert [([r.event_id for r in b], ingest) for b, ingest in appended] == [
        (["a", "b"], 100),
        (["d"], 300),
    ]
    out = answers.getvalue()
    assert [ACK.unpack_from(out, i) for i in range(0, len(out), ACK.size)] == [(1, 0), (2, 2)]


def _logged(path) -> list[dict]:
    log = EmbeddedLog(path)
    try:
        return [orjson.loads(r.payload) for r in log.read(PREDICTIONS_STREAM, 0, 100_000)]
    finally:
        log.close()


def _record(i: int) -> dict:
    return {"prediction_id": new_id(), "ts_us": i, "score": i / 10}


def _pid(logger: PredictionLogger) -> int | None:
    process = logger._sink._process  # type: ignore[attr-defined]
    return None if process is None else process.pid


@pytest.fixture
def address(tmp_path):
    EmbeddedLog(tmp_path / "log.db").close()
    return LogAddress("sqlite:///log.db", tmp_path)


def test_a_logger_with_an_address_writes_through_its_own_process(address, tmp_path):
    logger = PredictionLogger(None, lambda: 7, address=address)  # type: ignore[arg-type]
    sent = [_record(i) for i in range(3000)]
    for i in range(0, len(sent), 10):
        logger.log(sent[i : i + 10])
    logger.flush()
    pid = _pid(logger)
    assert pid is not None and pid != os.getpid()
    assert [r["prediction_id"] for r in _logged(tmp_path / "log.db")] == [
        r["prediction_id"] for r in sent
    ]
    logger.close()
    assert _pid(logger) is None
    with pytest.raises(ProcessLookupError):  # stopped and reaped
        os.kill(pid, 0)
    logger.log([_record(9)])  # a record after close starts a writer again
    logger.close()
    assert len(_logged(tmp_path / "log.db")) == 3001
    assert logger.errors == 0


def test_an_idle_writer_stops_and_the_next_record_starts_one(address, tmp_path):
    logger = PredictionLogger(None, lambda: 7, address=address, idle=0.2)  # type: ignore[arg-type]
    logger.log([_record(1)])
    logger.flush()
    assert _pid(logger) is not None
    deadline = time.monotonic() + 10
    while _pid(logger) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pid(logger) is None
    logger.log([_record(2)])
    logger.flush()
    assert [r["ts_us"] for r in _logged(tmp_path / "log.db")] == [1, 2]
    logger.close()


def _dead(pid: int) -> bool:
    try:  # a killed child stays a zombie ("Z") until the logger reaps it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# "exited": the batch's write fails (a broken pipe, even when the pipe is closed after it);
# "dying": the write may still succeed and the sync that follows finds the process gone
@pytest.mark.parametrize("when", ["exited", "dying"])
def test_a_writer_that_dies_costs_the_records_it_held_counted_and_a_new_one_takes_over(
    address, tmp_path, when
):
    logger = PredictionLogger(None, lambda: 7, address=address)  # type: ignore[arg-type]
    logger.log([_record(1)])
    logger.flush()
    first = _pid(logger)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while when == "exited" and not _dead(first) and time.monotonic() < deadline:
        time.sleep(0.01)
    logger.log([_record(2)])  # sent to a dead process: lost, and counted
    logger.flush()
    assert logger.errors == 1
    logger.log([_record(3)])
    logger.flush()
    assert _pid(logger) not in (None, first)
    assert [r["ts_us"] for r in _logged(tmp_path / "log.db")] == [1, 3]
    logger.close()


def test_a_log_the_writer_cannot_open_is_reported_as_errors_not_raised(tmp_path):
    address = LogAddress("nosuch://somewhere", tmp_path)
    logger = PredictionLogger(None, lambda: 7, address=address)  # type: ignore[arg-type]
    logger.log([_record(1), _record(2)])
    logger.flush()
    assert logger.errors == 2
    logger.close()


def test_the_log_url_reaches_the_writer_through_its_pipe_not_its_command_line(tmp_path):
    """A URL may carry credentials: any user of the machine can read a command line."""
    EmbeddedLog(tmp_path / "secret-name.db").close()
    address = LogAddress("sqlite:///secret-name.db", tmp_path)
    logger = PredictionLogger(None, lambda: 7, address=address)  # type: ignore[arg-type]
    logger.log([_record(1)])
    logger.flush()
    pid = _pid(logger)
    assert pid is not None
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert b"secret-name" not in command
    assert logger.errors == 0
    logger.close()


def test_the_writer_thread_outlives_a_failure_and_counts_what_it_lost(tmp_path):
    calls = []

    def clock() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a clock that fails once")
        return 7

    log = EmbeddedLog(tmp_path / "log.db")
    logger = PredictionLogger(log, clock)
    logger.log([_record(1), _record(2)])
    logger.flush()
    assert logger.errors == 2
    logger.log([_record(3)])
    logger.flush()
    assert [r["ts_us"] for r in _logged(tmp_path / "log.db")] == [3]
    log.close()
