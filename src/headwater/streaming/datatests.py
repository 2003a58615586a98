"""Continuous data tests: the expectations declared on streams and features, checked on every
batch the processor applies (a stream's events; the feature values of the entities the batch
changed) and on demand (``headwater check``). A failure goes to the ``alerts`` stream with the
owner, once per expectation, check and day however many batches break it."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from headwater.definitions.collection import Definitions
from headwater.definitions.expectations import Expectation, Violation
from headwater.features.plan import FeatureSetPlan, entity_key
from headwater.log.base import ALERTS_STREAM as ALERTS
from headwater.log.base import Log, NewRecord

DAY_US = 86_400_000_000


@dataclass(frozen=True)
class DataTest:
    """One expectation, on a stream's field or a feature's output."""

    kind: str  # "stream" or "feature"
    name: str  # the stream or the feature
    owner: str
    expectation: Expectation


@dataclass(frozen=True)
class Failure:
    test: DataTest
    violation: Violation

    def alert(self, at_us: int, where: str) -> dict[str, Any]:
        v = self.violation
        return {
            "kind": "data_test",
            "level": "alert",
            "on": self.test.kind,
            self.test.kind: self.test.name,
            "owner": self.test.owner,
            "column": v.column,
            "check": v.check,
            "expected": v.expected,
            "observed": v.observed,
            "rows": v.rows,
            "of": v.of,
            "examples": list(v.examples),
            "where": where,
            "at_us": at_us,
            "message": f"{self.test.kind} {self.test.name!r}: {v.describe()}",
        }


@dataclass(frozen=True)
class Result:
    """A data test on some values: how many it checked and what broke."""

    test: DataTest
    checked: int
    violations: tuple[Violation, ...]

    @property
    def passed(self) -> bool:
        return not self.violations


class DataTests:
    """The expectations of a project's streams and features, by stream and feature set."""

    def __init__(self, definitions: Definitions, plans: Iterable[FeatureSetPlan]) -> None:
        self.streams: dict[str, list[DataTest]] = {}
        for s in definitions.streams.values():
            for e in s.expectations:
                self.streams.setdefault(s.name, []).append(DataTest("stream", s.name, s.owner, e))
        self.plans: dict[str, list[tuple[DataTest, Any]]] = {}
        for plan in plans:
            for column in plan.columns:
                for e in column.feature.expectations:
                    if e.column == column.name:
                        test = DataTest("feature", column.feature.name, column.feature.owner, e)
                        self.plans.setdefault(plan.id, []).append((test, column))

    def __bool__(self) -> bool:
        return bool(self.streams or self.plans)

    def stream_results(
        self,
        stream: str,
        rows: Sequence[Mapping[str, Any]],
        chosen: Callable[[DataTest], bool] = lambda _: True,
    ) -> list[Result]:
        """A stream's (chosen) tests on some of its events."""
        return [
            Result(t, len(rows), tuple(t.expectation.violations(
                [row.get(t.expectation.column) for row in rows])))
            for t in self.streams.get(stream, ()) if chosen(t)
        ]  # fmt: skip

    def state_results(
        self,
        plan: FeatureSetPlan,
        states: Sequence[dict[str, Any] | None],
        t_us: int,
        chosen: Callable[[DataTest], bool] = lambda _: True,
    ) -> list[Result]:
        """A feature set's (chosen) tests on the values, at ``t_us``, of some entities."""
        tests = [(t, c) for t, c in self.plans.get(plan.id, ()) if chosen(t)]
        if not tests or not states:
            return []
        columns = [c for _, c in tests]
        values = [plan.evaluate(state, columns, t_us) for state in states]
        return [
            Result(t, len(values), tuple(t.expectation.violations(
                [v.get(c.name) for v in values])))
            for t, c in tests
        ]  # fmt: skip

    def on_events(self, stream: str, rows: Sequence[Mapping[str, Any]]) -> list[Failure]:
        """A batch of a stream's events against the stream's expectations."""
        return _failures(self.stream_results(stream, rows))

    def on_states(
        self, plan: FeatureSetPlan, states: Mapping[str, dict[str, Any]], t_us: int
    ) -> list[Failure]:
        """The feature values (at ``t_us``) of the entities a batch changed."""
        return _failures(self.state_results(plan, list(states.values()), t_us))


def _failures(results: Iterable[Result]) -> list[Failure]:
    return [Failure(r.test, v) for r in results for v in r.violations]


class AlertWriter:
    """Failures to the alerts stream: one alert per (test, check, UTC day), counted."""

    def __init__(self, log: Log, clock: Callable[[], int]) -> None:
        self._log, self._clock = log, clock
        self._lock = threading.Lock()
        self.failures = 0
        self.sent: set[str] = set()

    def write(self, failures: Sequence[Failure], where: str) -> list[dict[str, Any]]:
        if not failures:
            return []
        now = self._clock()
        records, alerts = [], []
        for f in failures:
            ident = hashlib.sha1(
                "|".join(
                    ["data_test", f.test.kind, f.test.name, f.violation.column,
                     f.violation.check, str(now // DAY_US)]
                ).encode()
            ).hexdigest()[:24]  # fmt: skip
            alert = f.alert(now, where)
            alerts.append(alert)
            with self._lock:
                self.failures += 1
                if ident in self.sent:
                    continue
                self.sent.add(ident)
            records.append(NewRecord(ident, now, orjson.dumps(alert, default=str)))
        if records:
            self._log.append(ALERTS, records, now)
        return alerts


def check_now(
    tests: DataTests,
    log: Log,
    states: Callable[[FeatureSetPlan, list[str]], list[bytes | None]],
    plans: Mapping[str, FeatureSetPlan],
    now_us: int,
    limit: int = 100_000,
    chosen: Callable[[DataTest], bool] = lambda _: True,
) -> tuple[list[Result], list[Failure]]:
    """Every chosen data test on the latest ``limit`` events of each stream partition (a
    stream's tests), or on the current feature values of the entities those events name (a
    feature's tests)."""

    def latest(stream: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for p in range(log.partitions(stream)):
            end = log.end_offset(stream, p)
            start = max(0, end - limit)
            while start < end:
                read = log.read_payloads(stream, start, min(10_000, end - start), p)
                if not read:
                    break
                rows += [orjson.loads(payload) for _, payload in read]
                start = read[-1][0] + 1
        return rows

    results: list[Result] = []
    for stream in sorted(tests.streams):
        if any(chosen(t) for t in tests.streams[stream]):
            results += tests.stream_results(stream, latest(stream), chosen)
    for plan_id, pairs in sorted(tests.plans.items()):
        if not any(chosen(t) for t, _ in pairs):
            continue
        plan = plans[plan_id]
        keys = plan.entity.keys
        entities = list(
            dict.fromkeys(entity_key([r[k] for k in keys]) for r in latest(plan.stream.name))
        )
        decoded = [plan.decode(blob) for blob in states(plan, entities)]
        results += tests.state_results(plan, decoded, now_us, chosen)
    return results, _failures(results)
