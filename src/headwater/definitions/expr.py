"""Row filters written once, evaluated identically in Python (streaming) and SQL (batch).

Comparisons with a null value are unknown, and only rows whose filter is true pass, as in SQL.

>>> paid = col("status") == "paid"
>>> paid.evaluate({"status": "paid"}), paid.evaluate({"status": None})
(True, None)
>>> paid.to_sql("e")
'(e."status" = \\'paid\\')'
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from headwater.errors import DefinitionError

_COMPARISONS: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "==": (operator.eq, "="),
    "!=": (operator.ne, "<>"),
    "<": (operator.lt, "<"),
    "<=": (operator.le, "<="),
    ">": (operator.gt, ">"),
    ">=": (operator.ge, ">="),
}


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise DefinitionError(f"filters compare with strings, numbers or booleans, not {value!r}")


def sql_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Expr(ABC):
    """A boolean expression over one event's fields."""

    @abstractmethod
    def evaluate(self, row: Mapping[str, Any]) -> bool | None: ...

    @abstractmethod
    def to_sql(self, alias: str) -> str: ...

    @abstractmethod
    def fields(self) -> set[str]: ...

    @abstractmethod
    def spec(self) -> Any: ...

    def __and__(self, other: Expr) -> Expr:
        return _Logic("and", (self, other))

    def __or__(self, other: Expr) -> Expr:
        return _Logic("or", (self, other))

    def __invert__(self) -> Expr:
        return _Not(self)


@dataclass(frozen=True, eq=False)
class _Compare(Expr):
    field: str
    op: str
    value: Any

    def evaluate(self, row: Mapping[str, Any]) -> bool | None:
        got = row.get(self.field)
        if got is None:
            return None
        return bool(_COMPARISONS[self.op][0](got, self.value))

    def to_sql(self, alias: str) -> str:
        sql_op = _COMPARISONS[self.op][1]
        return f"({alias}.{sql_name(self.field)} {sql_op} {sql_literal(self.value)})"

    def fields(self) -> set[str]:
        return {self.field}

    def spec(self) -> Any:
        return [self.op, self.field, self.value]


@dataclass(frozen=True, eq=False)
class _IsIn(Expr):
    field: str
    values: tuple[Any, ...]

    def evaluate(self, row: Mapping[str, Any]) -> bool | None:
        got = row.get(self.field)
        return None if got is None else got in self.values

    def to_sql(self, alias: str) -> str:
        items = ", ".join(sql_literal(v) for v in self.values)
        return f"({alias}.{sql_name(self.field)} IN ({items}))"

    def fields(self) -> set[str]:
        return {self.field}

    def spec(self) -> Any:
        return ["in", self.field, list(self.values)]


@dataclass(frozen=True, eq=False)
class _IsNull(Expr):
    field: str
    negate: bool

    def evaluate(self, row: Mapping[str, Any]) -> bool | None:
        return (row.get(self.field) is None) != self.negate

    def to_sql(self, alias: str) -> str:
        return f"({alias}.{sql_name(self.field)} IS {'NOT ' if self.negate else ''}NULL)"

    def fields(self) -> set[str]:
        return {self.field}

    def spec(self) -> Any:
        return ["not_null" if self.negate else "is_null", self.field]


@dataclass(frozen=True, eq=False)
class _Not(Expr):
    inner: Expr

    def evaluate(self, row: Mapping[str, Any]) -> bool | None:
        got = self.inner.evaluate(row)
        return None if got is None else not got

    def to_sql(self, alias: str) -> str:
        return f"(NOT {self.inner.to_sql(alias)})"

    def fields(self) -> set[str]:
        return self.inner.fields()

    def spec(self) -> Any:
        return ["not", self.inner.spec()]


@dataclass(frozen=True, eq=False)
class _Logic(Expr):
    op: str
    parts: tuple[Expr, ...]

    def evaluate(self, row: Mapping[str, Any]) -> bool | None:
        # Kleene logic, as SQL: false wins an "and", true wins an "or".
        decisive = self.op == "or"
        unknown = False
        for part in self.parts:
            got = part.evaluate(row)
            if got is None:
                unknown = True
            elif got == decisive:
                return decisive
        return None if unknown else not decisive

    def to_sql(self, alias: str) -> str:
        joiner = f" {self.op.upper()} "
        return "(" + joiner.join(p.to_sql(alias) for p in self.parts) + ")"

    def fields(self) -> set[str]:
        return set().union(*(p.fields() for p in self.parts))

    def spec(self) -> Any:
        return [self.op, [p.spec() for p in self.parts]]


class Column:
    """A reference to an event field, the start of a filter: ``col("status") == "paid"``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _cmp(self, op: str, value: Any) -> Expr:
        sql_literal(value)  # validates the literal early, with a clear message
        if value is None:
            raise DefinitionError(
                f"compare {self.name!r} with None using .is_null() or .is_not_null()"
            )
        return _Compare(self.name, op, value)

    def __eq__(self, value: Any) -> Expr:  # type: ignore[override]
        return self._cmp("==", value)

    def __ne__(self, value: Any) -> Expr:  # type: ignore[override]
        return self._cmp("!=", value)

    def __lt__(self, value: Any) -> Expr:
        return self._cmp("<", value)

    def __le__(self, value: Any) -> Expr:
        return self._cmp("<=", value)

    def __gt__(self, value: Any) -> Expr:
        return self._cmp(">", value)

    def __ge__(self, value: Any) -> Expr:
        return self._cmp(">=", value)

    def __hash__(self) -> int:
        return hash(self.name)

    def isin(self, values: Iterable[Any]) -> Expr:
        items = tuple(values)
        for v in items:
            sql_literal(v)
        return _IsIn(self.name, items)

    def is_null(self) -> Expr:
        return _IsNull(self.name, negate=False)

    def is_not_null(self) -> Expr:
        return _IsNull(self.name, negate=True)


def col(name: str) -> Column:
    """Refer to a field of the stream in a feature's filter."""
    return Column(name)
