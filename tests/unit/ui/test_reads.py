"""The figures only the UI computes, against counts made the slow way."""

from __future__ import annotations

from datetime import timedelta

from headwater import Project
from headwater.definitions.types import to_micros
from headwater.ui import reads
from headwater.ui.charts import bar_chart, fill_days, line_chart, ticks
from headwater.ui.memo import Memo
from tests.conftest import write_project
from tests.unit.training.conftest import DEFINITIONS, NOW


def test_ingested_since_bisects_the_log_by_ingest_time_and_dead_letters_are_incremental(
    tmp_path,
):
    clock = {"t": NOW}
    with Project(write_project(tmp_path / "p", DEFINITIONS), clock=lambda: clock["t"]) as p:
        sizes = [3, 0, 7, 1, 12]
        for hour, size in enumerate(sizes):
            clock["t"] = NOW + timedelta(hours=hour)
            batch = [
                {"user_id": f"u{i}", "device": "web", "ts": clock["t"], "event_id": f"{hour}-{i}"}
                for i in range(size)
            ]
            if batch:
                assert p.ingest("visits", batch).accepted == size
        ui = p.app().state.ui
        for hour in range(len(sizes) + 1):
            since = to_micros(NOW + timedelta(hours=hour))
            assert reads.ingested_since(p.log, "visits", since) == sum(sizes[hour:])
        assert reads.ingested_since(p.log, "no_such_stream", 0) == 0

        assert reads.dead_letters(ui).count("visits") == 0
        p.ingest("visits", [{"user_id": "u1", "device": 1, "ts": clock["t"]}])
        first = reads.dead_letters(ui)
        assert first.count("visits") == 1 and "expected string" in first.of("visits")[0][0]
        p.ingest("visits", [{"user_id": "u1", "device": 2, "ts": clock["t"]}, {"ts": 1}])
        second = reads.dead_letters(ui)
        assert second.count("visits") == 3 and second.offsets == (3,)
        assert reads.dead_letters(ui) is second  # nothing new: nothing read


def test_the_memo_recomputes_exactly_when_its_key_changes():
    memo, calls = Memo(size=2), []

    def compute(value):
        return lambda: calls.append(value) or value

    assert memo.get("a", 1, compute("x")) == "x"
    assert memo.get("a", 1, compute("y")) == "x" and calls == ["x"]
    assert memo.get("a", 2, compute("z")) == "z"
    memo.get("b", 1, compute("b"))
    memo.get("c", 1, compute("c"))  # "a" is the least recently used: dropped
    assert memo.peek("a") is None and memo.peek("c") == "c"


def test_charts_draw_axes_hover_values_and_a_table_of_the_figures():
    chart = line_chart(
        {"auc": [("2026-01-01", 0.7), ("2026-01-03", None), ("2026-01-04", 0.9)]},
        caption="Live auc",
        threshold=0.8,
    )
    assert "<title>auc · 2026-01-04: 0.9</title>" in chart
    assert "<title>alert 0.8</title>" in chart
    assert chart.count("<circle") == 2  # no mark where there is no value
    assert "2026-01-02" in chart  # days without a figure keep their place on the axis
    assert 'aria-label="Live auc"' in chart and "<table>" in chart
    bars = bar_chart({"n": [1.0, 3.0]}, ["<a>", "b"], caption="x")
    assert "&lt;a&gt;" in bars and "<a>" not in bars  # labels are escaped
    assert ticks(0, 0.93)[-1] >= 0.93 and fill_days(["b", "a"]) == ["b", "a"]
