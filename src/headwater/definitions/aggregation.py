"""Aggregation helpers: what a windowed feature computes over the events in its window.

Every aggregation skips events whose field is null; ``count`` counts events.

>>> sum("amount")
Aggregation(kind='sum', field='amount', k=None)
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass

from headwater.errors import DefinitionError

NUMERIC_KINDS = frozenset({"sum", "mean", "stddev", "variance"})
KINDS = frozenset(
    {"count", "min", "max", "last", "first", "last_k", "count_distinct"} | NUMERIC_KINDS
)


@dataclass(frozen=True)
class Aggregation:
    """A declared aggregation: its kind, the field it reads and, for ``last_k``, k."""

    kind: str
    field: str | None = None
    k: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DefinitionError(f"unknown aggregation {self.kind!r}; use one of {sorted(KINDS)}")
        if self.kind != "count" and not self.field:
            raise DefinitionError(f"aggregation {self.kind!r} needs a field")
        if self.kind == "last_k" and (not isinstance(self.k, int) or self.k < 1):
            raise DefinitionError("last_k needs k, a positive integer")

    def spec(self) -> dict[str, object]:
        return {"kind": self.kind, "field": self.field, "k": self.k}


def count() -> Aggregation:
    """The number of events (after the feature's filter)."""
    return Aggregation("count")


def sum(field: str) -> Aggregation:  # noqa: A001 - named as users say it
    """The sum of a numeric field; 0 over no events."""
    return Aggregation("sum", field)


def mean(field: str) -> Aggregation:
    """The arithmetic mean of a numeric field; null over no events."""
    return Aggregation("mean", field)


def min(field: str) -> Aggregation:  # noqa: A001
    """The smallest value; null over no events."""
    return Aggregation("min", field)


def max(field: str) -> Aggregation:  # noqa: A001
    """The largest value; null over no events."""
    return Aggregation("max", field)


def variance(field: str) -> Aggregation:
    """The population variance of a numeric field; null over no events."""
    return Aggregation("variance", field)


def stddev(field: str) -> Aggregation:
    """The population standard deviation of a numeric field; null over no events."""
    return Aggregation("stddev", field)


def last(field: str) -> Aggregation:
    """The value of the latest event by event time (ties: the later in the log)."""
    return Aggregation("last", field)


def first(field: str) -> Aggregation:
    """The value of the earliest event by event time (ties: the earlier in the log)."""
    return Aggregation("first", field)


def last_k(field: str, k: int) -> Aggregation:
    """The values of the latest k events, most recent first."""
    return Aggregation("last_k", field, k)


def count_distinct(field: str) -> Aggregation:
    """The exact number of distinct values."""
    return Aggregation("count_distinct", field)


__all__ = [
    "Aggregation",
    "count",
    "count_distinct",
    "first",
    "last",
    "last_k",
    "max",
    "mean",
    "min",
    "stddev",
    "sum",
    "variance",
]
_ = builtins  # the helpers above shadow builtins on purpose; keep the real ones reachable
