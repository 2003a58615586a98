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
from headwater.features.plan import FeatureSetPlan
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


class DataTests:
    """The expectations of a project's streams and features, by stream and feature set."""

    def __init__(self, definitions: Definitions, plans: Iterable[FeatureSetPlan]) -> None:
        self.streams: dict[str, list[DataTest]] = {}
        for s in definitions.streams.values():
            for e in getattr(s, "expectations", ()):
                self.streams.setdefault(s.name, []).append(DataTest("stream", s.name, s.owner, e))
        self.plans: dict[str, list[tuple[DataTest, Any]]] = {}
        for plan in plans:
            for column in plan.columns:
                for e in getattr(column.feature, "expectations", ()):
                    if e.column == column.name:
                        test = DataTest("feature", column.feature.name, column.feature.owner, e)
                        self.plans.setdefault(plan.id, []).append((test, column))

    def __bool__(self) -> bool:
        return bool(self.streams or self.plans)

    @property
    def all(self) -> list[DataTest]:
        return [t for ts in self.streams.values() for t in ts] + [
            t for ts in self.plans.values() for t, _ in ts
        ]

    def on_events(self, stream: str, rows: Sequence[Mapping[str, Any]]) -> list[Failure]:
        """A batch of a stream's events against the stream's expectations."""
        out = []
        for test in self.streams.get(stream, ()):
            values = [row.get(test.expectation.column) for row in rows]
            out += [Failure(test, v) for v in test.expectation.violations(values)]
        return out

    def on_states(
        self, plan: FeatureSetPlan, states: Mapping[str, dict[str, Any]], t_us: int
    ) -> list[Failure]:
        """The feature values (at ``t_us``) of the entities a batch changed."""
        tests = self.plans.get(plan.id)
        if not tests or not states:
            return []
        columns = [c for _, c in tests]
        values = [plan.evaluate(state, columns, t_us) for state in states.values()]
        out = []
        for test, column in tests:
            found = test.expectation.violations([v.get(column.name) for v in values])
            out += [Failure(test, v) for v in found]
        return out


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


@dataclass(frozen=True)
class Result:
    """A data test run on demand: how many values it checked and what broke."""

    test: DataTest
    checked: int
    violations: tuple[Violation, ...]

    @property
    def passed(self) -> bool:
        return not self.violations


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
    from headwater.features.plan import entity_key

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
    failures: list[Failure] = []
    for stream, ts in sorted(tests.streams.items()):
        on_stream = [t for t in ts if chosen(t)]
        if not on_stream:
            continue
        rows = latest(stream)
        for t in on_stream:
            found = t.expectation.violations([r.get(t.expectation.column) for r in rows])
            results.append(Result(t, len(rows), tuple(found)))
            failures += [Failure(t, v) for v in found]
    for plan_id, pairs in sorted(tests.plans.items()):
        mine = [(t, c) for t, c in pairs if chosen(t)]
        if not mine:
            continue
        plan = plans[plan_id]
        keys = plan.entity.keys
        entities = list(
            dict.fromkeys(entity_key([r[k] for k in keys]) for r in latest(plan.stream.name))
        )
        decoded = [plan.decode(blob) for blob in states(plan, entities)]
        values = [plan.evaluate(s, [c for _, c in mine], now_us) for s in decoded]
        for t, column in mine:
            found = t.expectation.violations([v.get(column.name) for v in values])
            results.append(Result(t, len(values), tuple(found)))
            failures += [Failure(t, v) for v in found]
    return results, failures
