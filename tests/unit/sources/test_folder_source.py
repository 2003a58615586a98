"""Folder sources: files landing over time, each ingested once, partial files left alone, bad
lines dead-lettered, restarts that append nothing twice."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from headwater import Project
from headwater.cli import app
from headwater.log.base import DEAD_LETTER_STREAM
from headwater.sources import PollResult
from tests.conftest import write_project

DEFINITIONS = """
from headwater import FolderSource, Stream

orders = Stream(
    "orders",
    fields={"user_id": "string", "amount": "float", "ts": "timestamp"},
    key="user_id", time="ts", required=["amount"], owner="payments", description="Orders",
)
landing = FolderSource(
    "landing", stream=orders, path="landing", pattern="*", owner="payments",
    description="Order exports from the warehouse",
)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = write_project(tmp_path / "project", DEFINITIONS)
    (path / "landing").mkdir()
    return path


def _line(user: str, amount: Any, day: int = 1) -> bytes:
    return orjson.dumps({"user_id": user, "amount": amount, "ts": f"2026-01-{day:02d}T10:00:00Z"})


def _land(path: Path, content: bytes, age: float = 60.0) -> Path:
    """Write a file whose last change was ``age`` seconds ago (0: being written now)."""
    path.write_bytes(content)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def _poll(path: Path) -> PollResult:
    with Project(path) as p:
        (result,) = p.source_runner().poll()
    assert result.error is None, result.error
    return result


def _events(path: Path, stream: str = "orders") -> list[dict[str, Any]]:
    with Project(path) as p:
        return [orjson.loads(r.payload) for r in p.log.read(stream, 0, 10_000)]


def test_files_appearing_over_time_are_each_ingested_once(project: Path) -> None:
    landing = project / "landing"
    _land(landing / "a.jsonl", b"\n".join([_line("u1", 1), _line("u2", 2)]) + b"\n", age=120)
    first = _poll(project)
    assert (first.files, first.read, first.accepted) == (1, 2, 2)

    _land(landing / "b.csv", b"user_id,amount,ts\nu3,3.5,2026-01-02T00:00:00Z\n")
    table = pa.table({"user_id": ["u4"], "amount": [4.0], "ts": ["2026-01-03T00:00:00Z"]})
    pq.write_table(table, landing / "c.parquet")
    _land(landing / "c.parquet", (landing / "c.parquet").read_bytes())
    second = _poll(project)
    assert (second.files, second.read, second.accepted) == (2, 2, 2)

    again = _poll(project)  # a re-run, by a fresh process, takes nothing
    assert (again.files, again.read) == (0, 0)
    assert [e["user_id"] for e in _events(project)] == ["u1", "u2", "u3", "u4"]


def test_a_file_still_being_written_is_left_until_complete(project: Path) -> None:
    landing = project / "landing"
    partial = _land(landing / "d.jsonl", _line("u1", 1) + b"\n" + b'{"user_id": "u2", "am', age=0)
    hidden = _land(landing / ".e.jsonl", _line("u5", 5) + b"\n", age=600)
    temporary = _land(landing / "f.jsonl.tmp", _line("u6", 6) + b"\n", age=600)

    waiting = _poll(project)
    assert (waiting.files, waiting.read, waiting.waiting) == (0, 0, 1)  # hidden/.tmp: unseen

    _land(partial, _line("u1", 1) + b"\n" + _line("u2", 2) + b"\n", age=30)  # now complete
    temporary.rename(landing / "f.jsonl")  # the writer's rename: the file is complete
    done = _poll(project)
    assert (done.files, done.read, done.accepted, done.rejected) == (2, 3, 3, 0)
    assert sorted(e["user_id"] for e in _events(project)) == ["u1", "u2", "u6"]
    assert hidden.exists()


def test_a_broken_json_line_is_rejected_with_its_line_number(project: Path) -> None:
    lines = [_line("u1", 1), b'{"user_id": "u2", "amount": ', _line("u3", None), _line("u4", 4)]
    _land(project / "landing" / "g.jsonl", b"\n".join(lines) + b"\n")
    result = _poll(project)
    assert (result.read, result.accepted, result.rejected) == (4, 2, 2)

    reasons = [d["reason"] for d in _events(project, DEAD_LETTER_STREAM)]
    assert "line 2 is not valid JSON" in reasons[0]
    assert reasons[1] == "missing required field 'amount'"
    assert _poll(project).read == 0  # the file is taken, its bad lines with it


def test_touched_or_grown_files_append_nothing_twice(project: Path) -> None:
    path = _land(project / "landing" / "h.jsonl", _line("u1", 1) + b"\n" + _line("u1", 1) + b"\n")
    assert _poll(project).accepted == 2  # two equal rows are two events

    _land(path, path.read_bytes(), age=10)  # touched: a new time, the same content
    touched = _poll(project)
    assert (touched.files, touched.read) == (0, 0)

    _land(path, path.read_bytes() + _line("u2", 2) + b"\n", age=10)  # grown: one new row
    grown = _poll(project)
    assert (grown.files, grown.read, grown.accepted, grown.duplicates) == (1, 3, 1, 2)
    assert len(_events(project)) == 3


def test_a_crash_before_the_checkpoint_appends_nothing_twice(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _land(project / "landing" / "i.jsonl", b"".join(_line(f"u{i}", i) + b"\n" for i in range(5)))
    with Project(project) as p:

        def killed(records: Any) -> None:
            raise KeyboardInterrupt("killed after the events were appended")

        monkeypatch.setattr(p.metadata, "put_records", killed)
        with pytest.raises(KeyboardInterrupt):
            p.source_runner().poll()
    resumed = _poll(project)
    assert (resumed.files, resumed.read, resumed.accepted, resumed.duplicates) == (1, 5, 0, 5)
    assert len(_events(project)) == 5


def test_unreadable_files_are_reported_once_and_reset_reads_again(project: Path) -> None:
    landing = project / "landing"
    _land(landing / "notes.txt", b"not events")
    _land(landing / "j.jsonl", _line("u1", 1) + b"\n")
    result = _poll(project)
    assert result.files == 1 and len(result.problems) == 1
    assert result.problems[0].startswith("notes.txt: cannot tell the format")
    assert _poll(project).problems == []

    with Project(project) as p:
        p.source_runner().reset("landing")
    again = _poll(project)
    assert (again.files, again.accepted, again.duplicates) == (1, 0, 1)


def test_a_missing_folder_is_an_error_that_names_it(project: Path) -> None:
    (project / "landing").rmdir()
    with Project(project) as p:
        (result,) = p.source_runner().poll()
    assert result.error is not None and "no folder" in result.error


def test_cli_polls_once_and_shows_status(project: Path) -> None:
    _land(project / "landing" / "k.jsonl", _line("u1", 1) + b"\n")
    cli = CliRunner()
    run = cli.invoke(app, ["source", "run", "-p", str(project)])
    assert run.exit_code == 0, run.output
    assert "landing: 1 files, 1 read, 1 accepted, 0 duplicates, 0 rejected" in run.output
    status = cli.invoke(app, ["source", "status", "-p", str(project)])
    assert status.exit_code == 0 and "1 files" in status.output
