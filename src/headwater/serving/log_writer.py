"""The prediction log's writer process: it reads framed prediction records from its stdin and
appends them to the log, so the serving process only serializes them (appending beside
requests in the same process stalled them on the GIL: in-process p99 5× p50).

The frames (little-endian), written by ``PredictionLogger`` and read here:

- first, where the log is: ``<I`` (length), then JSON ``{"url", "root", "stream"}``;
- a batch: ``<BQq`` (``BATCH``, body length, ingest time), then the body: records, each
  ``<IIq`` (id length, payload length, event time), the id (UTF-8), the payload;
- a sync: ``<BQq`` (``SYNC``, number, 0), answered on stdout with ``<QQ`` (number, records
  this process failed to append so far) once every batch before it is durable.

End of input (the server closed the pipe, or died) ends the process after appending every
complete record it received. SIGINT and SIGTERM are ignored: a Ctrl-C or a stop sent to the
process group must not take the records in the pipe with it; the server drains, then closes.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import orjson

from headwater.log.base import NewRecord

RECORD = struct.Struct("<IIq")  # id length, payload length, event time (µs)
HEADER = struct.Struct("<BQq")  # kind, body length or sync number, ingest time (µs)
ACK = struct.Struct("<QQ")  # sync number, records not appended so far
OPEN = struct.Struct("<I")  # length of the opening frame's JSON
BATCH, SYNC = 1, 2


def frame(event_id: str, event_time: int, payload: bytes) -> bytes:
    """One record as the writer reads it (made by the request that logs it)."""
    key = event_id.encode()
    return RECORD.pack(len(key), len(payload), event_time) + key + payload


def records(body: bytes) -> list[NewRecord]:
    """The complete records of a batch's body (a body cut short by a dying server yields
    the records before the cut)."""
    out: list[NewRecord] = []
    at, end, size = 0, len(body), RECORD.size
    while at + size <= end:
        keys, length, event_time = RECORD.unpack_from(body, at)
        start = at + size + keys
        if start + length > end:
            break
        key = body[at + size : start].decode()
        out.append(NewRecord(key, event_time, body[start : start + length], fresh_id=True))
        at = start + length
    return out


def serve(
    source: BinaryIO, answers: BinaryIO, append: Callable[[list[NewRecord], int], object]
) -> int:
    """Read frames from ``source`` until its end, appending each batch with ``append(records,
    ingest_time)`` and answering syncs on ``answers``; returns the records not appended."""
    failed = 0
    while True:
        head = source.read(HEADER.size)
        if len(head) < HEADER.size:
            return failed
        kind, size, ingest = HEADER.unpack(head)
        if kind == SYNC:
            answers.write(ACK.pack(size, failed))
            answers.flush()
            continue
        body = source.read(size)
        batch = records(body)
        try:
            append(batch, ingest)
        except Exception as exc:  # noqa: BLE001 - counted and reported; the writer goes on
            failed += len(batch)
            print(f"headwater: {len(batch)} predictions not logged: {exc}", file=sys.stderr)
        if len(body) < size:
            return failed  # the server died while writing: nothing follows


def opening(url: str, root: str, stream: str) -> bytes:
    """The first frame: where the log is. Sent through the pipe, not the command line, where
    any user of the machine could read a URL's credentials."""
    doc = orjson.dumps({"url": url, "root": root, "stream": stream})
    return OPEN.pack(len(doc)) + doc


def main() -> None:
    """Open the log named by the first frame as the server opened it, then write."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # the answers get a descriptor of their own; anything printed goes to stderr instead
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    source = sys.stdin.buffer
    (size,) = OPEN.unpack(source.read(OPEN.size))
    where = orjson.loads(source.read(size))
    from headwater.log.urls import open_log

    log = open_log(where["url"], Path(where["root"]))
    stream = where["stream"]
    try:
        serve(source, answers, lambda batch, ingest: log.append(stream, batch, ingest))
    finally:
        log.close()
