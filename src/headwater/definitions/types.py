"""Field types of streams: parsing and validating raw values into canonical Python values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from headwater.errors import DefinitionError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DType(StrEnum):
    """The types a stream field can have."""

    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    TIMESTAMP = "timestamp"


class InvalidValue(ValueError):
    """A raw value does not fit its declared type."""


def parse_dtype(value: str | DType) -> DType:
    try:
        return DType(value)
    except ValueError:
        allowed = ", ".join(t.value for t in DType)
        raise DefinitionError(f"unknown field type {value!r}; use one of: {allowed}") from None


def to_micros(value: Any) -> int:
    """Convert a timestamp (ISO 8601 string, datetime, or epoch seconds) to UTC microseconds.

    >>> to_micros("1970-01-01T00:00:01Z")
    1000000
    >>> to_micros(1.5)
    1500000
    """
    if isinstance(value, bool):
        raise InvalidValue(f"expected a timestamp, got a boolean {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) >= 9_223_372_036_854:  # int64 microseconds
            raise InvalidValue(f"expected a timestamp, got {value!r} (out of range)")
        return round(value * 1_000_000)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidValue(
                f"cannot parse {value!r} as a timestamp; use ISO 8601 "
                "(2026-01-31T12:00:00Z) or epoch seconds"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if hasattr(value, "to_pydatetime"):  # pandas.Timestamp without importing pandas
        return to_micros(value.to_pydatetime())
    raise InvalidValue(f"expected a timestamp, got {type(value).__name__} {value!r}")


def from_micros(micros: int) -> datetime:
    """The UTC datetime of a microsecond timestamp."""
    return datetime.fromtimestamp(micros // 1_000_000, tz=UTC).replace(
        microsecond=micros % 1_000_000
    )


def iso(micros: int | None) -> str:
    """A time for people: ISO 8601 in UTC to the second ("-" for none).

    >>> iso(1_700_000_000_123_456)
    '2023-11-14T22:13:20Z'
    """
    if micros is None:
        return "-"
    return from_micros(int(micros)).isoformat(timespec="seconds").replace("+00:00", "Z")


def coerce(dtype: DType, value: Any) -> Any:
    """Validate one non-null raw value against a type; returns the canonical value."""
    if dtype is DType.STRING:
        if isinstance(value, str):
            return value
    elif dtype is DType.INT:
        if isinstance(value, int) and not isinstance(value, bool):
            if -(2**63) <= value < 2**63:
                return value
            raise InvalidValue(f"integer {value} does not fit in 64 bits")
        if isinstance(value, float) and value.is_integer():
            if abs(value) >= 2**53:  # past 2**53 a float is not the integer that was sent
                raise InvalidValue(f"{value!r} is too large to be an exact integer")
            return int(value)
    elif dtype is DType.FLOAT:
        if isinstance(value, int | float) and not isinstance(value, bool):
            f = float(value)
            if math.isfinite(f):
                return f
            raise InvalidValue(f"expected a finite number, got {value!r}")
    elif dtype is DType.BOOL:
        if isinstance(value, bool):
            return value
    elif dtype is DType.TIMESTAMP:
        return to_micros(value)
    raise InvalidValue(f"expected {dtype.value}, got {type(value).__name__} {value!r}")


@dataclass(frozen=True)
class Field:
    """A typed field of a stream."""

    name: str
    dtype: DType
    nullable: bool = True
    pii: bool = False
