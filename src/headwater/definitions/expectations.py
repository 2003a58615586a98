"""Expectations: declared checks of a column's values, run on a model's training data, on
every processed batch of a stream or feature set, and on demand (``headwater check``)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from headwater.errors import DefinitionError

KINDS = ("min_value", "max_value", "max_null_rate", "one_of", "pattern")


@dataclass(frozen=True)
class Violation:
    """One failed check on some values: which, what was seen, and a few offending values."""

    column: str
    check: str  # one of KINDS
    expected: Any
    observed: Any
    rows: int  # how many values broke it (for max_null_rate: the nulls)
    of: int  # how many values were checked
    examples: tuple[Any, ...] = ()

    def describe(self) -> str:
        return (
            f"{self.column}: {self.check} {self.expected!r} broken by {self.rows} of {self.of} "
            f"values (observed {self.observed!r})"
        )


@dataclass(frozen=True)
class Expectation:
    """A declared data check on ``column``: every non-null value at least ``min_value``, at
    most ``max_value``, among ``one_of``, matching the regular expression ``pattern`` (whole
    value); at most ``max_null_rate`` of the values null.

    >>> e = Expectation("amount", min_value=0, max_null_rate=0.5)
    >>> [v.check for v in e.violations([3.0, -1.0, None])]
    ['min_value']
    >>> Expectation("plan", one_of=["free", "pro"]).violations(["free", "gold"])[0].examples
    ('gold',)
    """

    column: str
    min_value: float | None = None
    max_value: float | None = None
    max_null_rate: float | None = None
    one_of: tuple[Any, ...] | None = None
    pattern: str | None = None

    def __post_init__(self) -> None:
        if self.one_of is not None:
            object.__setattr__(self, "one_of", tuple(self.one_of))
            if not self.one_of:
                raise DefinitionError(f"expectation on {self.column!r}: one_of needs values")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise DefinitionError(
                    f"expectation on {self.column!r}: pattern {self.pattern!r} is not a "
                    f"regular expression ({exc})"
                ) from None
        if self.max_null_rate is not None and not 0 <= self.max_null_rate <= 1:
            raise DefinitionError(
                f"expectation on {self.column!r}: max_null_rate must be between 0 and 1"
            )
        if (
            self.min_value is not None
            and self.max_value is not None
            and self.min_value > self.max_value
        ):
            raise DefinitionError(f"expectation on {self.column!r}: min_value > max_value")
        if all(getattr(self, k) is None for k in KINDS):
            raise DefinitionError(f"expectation on {self.column!r} checks nothing")

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"column": self.column}
        for k in KINDS:
            value = getattr(self, k)
            if value is not None:
                out[k] = list(value) if isinstance(value, tuple) else value
        return out

    def violations(self, values: Sequence[Any]) -> list[Violation]:
        """The checks these values break (none: the expectation holds)."""
        out: list[Violation] = []
        n = len(values)
        if not n:
            return out
        present = [v for v in values if v is not None and not _nan(v)]
        nulls = n - len(present)
        if self.max_null_rate is not None and nulls / n > self.max_null_rate:
            out.append(Violation(self.column, "max_null_rate", self.max_null_rate,
                                 round(nulls / n, 6), nulls, n))  # fmt: skip
        for check, bad in self._breaking(present):
            if bad:
                observed = (min if check == "min_value" else max)(bad) if check in (
                    "min_value", "max_value") else bad[0]  # fmt: skip
                out.append(Violation(self.column, check, _expected(self, check), observed,
                                     len(bad), n, tuple(bad[:3])))  # fmt: skip
        return out

    def _breaking(self, present: list[Any]) -> list[tuple[str, list[Any]]]:
        found: list[tuple[str, list[Any]]] = []
        if self.min_value is not None or self.max_value is not None:
            numbers = [v for v in present if isinstance(v, int | float) and not isinstance(v, bool)]
            if self.min_value is not None:
                found.append(("min_value", [v for v in numbers if v < self.min_value]))
            if self.max_value is not None:
                found.append(("max_value", [v for v in numbers if v > self.max_value]))
        if self.one_of is not None:
            allowed = set(self.one_of)
            found.append(("one_of", [v for v in present if v not in allowed]))
        if self.pattern is not None:
            match = re.compile(self.pattern).fullmatch
            found.append(("pattern", [v for v in present if not match(str(v))]))
        return found


def _expected(e: Expectation, check: str) -> Any:
    value = getattr(e, check)
    return list(value) if isinstance(value, tuple) else value


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)
