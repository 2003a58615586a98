"""The embedded log under concurrent appends: dense offsets, each id once, honest answers."""

from __future__ import annotations

import threading

from headwater.log.base import NewRecord
from headwater.log.embedded import EmbeddedLog


def test_concurrent_appends_are_grouped_without_losing_or_duplicating(tmp_path):
    log = EmbeddedLog(tmp_path / "log.db")
    answers: dict[str, set[int]] = {}
    lock = threading.Lock()

    def work(thread: int) -> None:
        for n in range(60):
            # ids overlap between threads: every id is sent by two threads
            ids = [f"e{(thread // 2)}-{n}-{i}" for i in range(3)]
            stream = "a" if n % 2 else "b"
            got = log.append(stream, [NewRecord(i, n, b"{}") for i in ids], ingest_time=1)
            with lock:
                for event_id, appended in zip(ids, got, strict=True):
                    answers.setdefault(f"{stream}/{event_id}", set()).add(appended.offset)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for stream in ("a", "b"):
        records = log.read(stream, 0, 100_000)
        assert [r.offset for r in records] == list(range(len(records)))
        assert len({r.event_id for r in records}) == len(records) == 4 * 30 * 3
        by_id = {r.event_id: r.offset for r in records}
        for key, offsets in answers.items():
            if key.startswith(stream + "/"):
                # both senders of an id were told the same single offset
                assert offsets == {by_id[key.split("/", 1)[1]]}
        assert log.end_offset(stream) == len(records)
    log.close()
