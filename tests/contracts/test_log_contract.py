"""The log contract, run against every backend (a new backend is one more param).

Kafka is a Tansu broker started for the session (see ``tests/kafka_broker.py``); each test
uses its own stream names. Tansu's high watermark lags by up to one batch, so the tests
append in batches of uneven sizes and check that reads and ``end_offset`` still find it all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from headwater.log.base import DEAD_LETTER_STREAM, Log, NewRecord, Record
from headwater.log.embedded import EmbeddedLog
from headwater.log.kafka import KafkaLog, KafkaSettings
from tests.kafka_broker import TansuBroker

PARTITIONS = 4
LogFactory = Callable[[], Log]


@pytest.fixture(params=["embedded", "kafka"])
def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogFactory]:
    """Opens log objects that all share one backend location."""
    opened: list[Log] = []

    def factory() -> Log:
        if request.param == "kafka":
            broker: TansuBroker = request.getfixturevalue("kafka_broker")
            url = broker.url(partitions=PARTITIONS, idle_ms=60, delivery_timeout_ms=5000)
            opened.append(KafkaLog(KafkaSettings.from_url(url)))
        else:
            opened.append(EmbeddedLog(tmp_path / "log.db"))
        return opened[-1]

    yield factory
    for log in opened:
        log.close()


@pytest.fixture
def log(open_log: LogFactory) -> Log:
    return open_log()


@pytest.fixture
def stream() -> str:
    return f"s{uuid.uuid4().hex[:12]}"


def _records(n: int, tag: str, keys: int = 10) -> list[NewRecord]:
    return [
        NewRecord(f"{tag}-{i}", 1_000_000 + i, b'{"i": %d}' % i, key=f"user-{i % keys}")
        for i in range(n)
    ]


def _read_all(log: Log, stream: str, partition: int, start: int = 0) -> list[Record]:
    """Every record from ``start``, the way readers do: until a read finds none."""
    out: list[Record] = []
    while records := log.read(stream, start, 7, partition):
        out += records
        start = records[-1].offset + 1
    return out


def test_appends_read_back_in_order_with_everything_they_carried(log, stream):
    sent = _records(40, "a") + [NewRecord("raw", 5, b"\x00\xff not json", key="user-3")]
    appended = log.append(stream, sent, ingest_time=1_700_000_000_123_456)
    assert not any(a.duplicate for a in appended)
    by_partition: dict[int, list[tuple[int, NewRecord]]] = {}
    for record, a in zip(sent, appended, strict=True):
        by_partition.setdefault(a.partition, []).append((a.offset, record))
    for partition in range(log.partitions(stream)):
        got = _read_all(log, stream, partition)
        want = by_partition.get(partition, [])
        assert [(r.offset, r.event_id) for r in got] == [(o, s.event_id) for o, s in want]
        for r, (_, s) in zip(got, want, strict=True):
            assert (r.event_time, r.ingest_time, r.payload, r.partition) == (
                s.event_time,
                1_700_000_000_123_456,
                s.payload,
                partition,
            )
        offsets = [r.offset for r in got]
        assert offsets == sorted(set(offsets))


def test_one_key_always_lands_in_one_partition_in_append_order(log, stream):
    sent = _records(60, "a", keys=12) + _records(24, "b", keys=12)
    appended = log.append(stream, sent[:60], ingest_time=1)
    appended += log.append(stream, sent[60:], ingest_time=2)
    where: dict[str, set[int]] = {}
    for record, a in zip(sent, appended, strict=True):
        where.setdefault(record.key or "", set()).add(a.partition)
    assert all(len(partitions) == 1 for partitions in where.values()), where
    used = {p for partitions in where.values() for p in partitions}
    assert used <= set(range(log.partitions(stream)))
    if log.partitions(stream) > 1:
        assert len(used) > 1  # 12 keys over 4 partitions
    read = {p: [r.event_id for r in _read_all(log, stream, p)] for p in used}
    for key, (partition,) in where.items():
        of_key = [r.event_id for r in sent if r.key == key]
        assert [i for i in read[partition] if i in of_key] == of_key


def test_end_offsets_and_reads_reach_the_end_after_uneven_batches(open_log, stream):
    log = open_log()
    sent: dict[int, int] = {}
    for n, tag in ((1, "a"), (50, "b"), (3, "c"), (1, "d"), (200, "e"), (2, "f")):
        for a in log.append(stream, _records(n, tag), ingest_time=1):
            sent[a.partition] = max(sent.get(a.partition, 0), a.offset + 1)
        for partition in range(log.partitions(stream)):
            assert log.end_offset(stream, partition) == sent.get(partition, 0)
    fresh = open_log()  # knows nothing of earlier appends or reads
    for partition in range(log.partitions(stream)):
        records = _read_all(fresh, stream, partition)
        assert (records[-1].offset + 1 if records else 0) == sent.get(partition, 0)
        assert fresh.end_offset(stream, partition) == sent.get(partition, 0)
    total = sum(len(_read_all(log, stream, p)) for p in range(log.partitions(stream)))
    assert total == 257


def test_reads_start_anywhere_and_stop_at_the_limit(log, stream):
    log.append(stream, _records(30, "a", keys=1), ingest_time=1)  # one key: one partition
    (partition,) = {p for p in range(log.partitions(stream)) if log.end_offset(stream, p) > 0}
    assert [r.offset for r in log.read(stream, 10, 5, partition)] == [10, 11, 12, 13, 14]
    assert [r.offset for r in log.read(stream, 3, 2, partition)] == [3, 4]  # backwards
    assert [r.offset for r in log.read(stream, 28, 100, partition)] == [28, 29]
    assert log.read(stream, 30, 100, partition) == []
    assert log.read(stream, 31, 100, partition) == []  # past the end
    assert log.read(stream, 0, 0, partition) == []
    # the processor's cheaper read: the same records' offsets and payloads
    for start, limit in ((0, 100), (10, 5), (28, 100), (30, 10)):
        expected = [(r.offset, r.payload) for r in log.read(stream, start, limit, partition)]
        assert log.read_payloads(stream, start, limit, partition) == expected
    assert log.read_payloads(stream, 0, 100, partition)[3] == (3, b'{"i": 3}')


def test_unknown_streams_are_empty(log, stream):
    assert log.read(stream, 0, 10) == []
    assert log.end_offset(stream) == 0
    assert stream not in log.streams()


def test_streams_lists_what_was_appended_to(log, stream):
    log.append(stream + "a", _records(1, "a"), ingest_time=1)
    log.append(stream + "b", _records(1, "b"), ingest_time=1)
    assert {stream + "a", stream + "b"} <= set(log.streams())
    assert stream not in log.streams()


def test_internal_streams_have_one_partition(log, stream):
    expected = PARTITIONS if isinstance(log, KafkaLog) else 1
    assert log.partitions(stream) == expected  # before and after the first append
    log.append(stream, _records(1, "a"), ingest_time=1)
    assert log.partitions(stream) == expected
    for internal in (DEAD_LETTER_STREAM, "predictions", "alerts"):
        assert log.partitions(internal) == 1


def test_logs_on_one_backend_see_each_others_appends(open_log, stream):
    writer, reader = open_log(), open_log()
    appended = writer.append(stream, _records(5, "a", keys=1), ingest_time=1)
    partition = appended[0].partition
    assert [r.event_id for r in reader.read(stream, 0, 10, partition)] == [
        f"a-{i}" for i in range(5)
    ]
    more = writer.append(stream, _records(2, "b", keys=1), ingest_time=1)
    assert [r.offset for r in reader.read(stream, 5, 10, partition)] == [a.offset for a in more]
