"""Validating raw events against their stream's schema; each failure has a clear reason."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from headwater.definitions import DType, Stream
from headwater.definitions.types import InvalidValue, coerce, from_micros
from headwater.errors import did_you_mean
from headwater.log.ids import new_id

# Timestamps a person and datetime can read: 0001-01-01 to 9999-12-31 (event times start at
# 1970: an event before it is a sender's bug, e.g. seconds sent as negative microseconds).
MIN_TIMESTAMP_US = -62_135_596_800_000_000
MAX_TIMESTAMP_US = 253_402_300_799_999_999
MAX_DEPTH = 32  # nesting of a kept unknown field (objects and arrays)
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f-\x9f]"  # not allowed in keys and event ids
_CONTROL = re.compile(CONTROL_CHARACTERS)


class Rejected(ValueError):
    """An event does not fit its stream; the message is the reason given to the sender."""


@dataclass(frozen=True, slots=True)
class ValidEvent:
    event_id: str
    event_time: int
    fields: dict[str, Any]


@dataclass(frozen=True)
class TimePolicy:
    """Bounds on event time relative to the ingest clock, in microseconds."""

    now_us: int
    max_future_us: int


def validate(stream: Stream, raw: Any, policy: TimePolicy) -> ValidEvent:
    """Check one raw event and return its canonical form, or raise Rejected with the reason."""
    if not isinstance(raw, Mapping):
        preview = raw if isinstance(raw, str) else repr(raw)
        if stream.pii_policies:  # the text may hold a PII value: name its type only
            preview = f"a {type(raw).__name__}"
        raise Rejected(f"an event must be a JSON object, got {preview[:200]}")
    out: dict[str, Any] = {}
    for name, spec in stream.fields.items():
        value = raw.get(name)
        if value is None:
            if not spec.nullable:
                raise Rejected(f"missing required field {name!r}")
            out[name] = None
            continue
        try:
            out[name] = coerce(spec.dtype, value)
        except InvalidValue as exc:
            if spec.pii:  # the reason would quote the value
                raise Rejected(
                    f"field {name!r}: expected {spec.dtype.value}, got {type(value).__name__} "
                    "(a PII field: its value is not repeated)"
                ) from None
            raise Rejected(f"field {name!r}: {exc}") from None
        if (
            spec.dtype is DType.TIMESTAMP
            and name != stream.time  # the event time has its own bounds (_check_time)
            and not (MIN_TIMESTAMP_US <= out[name] <= MAX_TIMESTAMP_US)
        ):
            raise Rejected(f"field {name!r}: {out[name]} µs is outside the years 1 to 9999")
    for name in stream.keys:
        if isinstance(out[name], str) and _CONTROL.search(out[name]):
            raise Rejected(f"key field {name!r} contains a control character")
    event_id = raw.get(stream.id_field)
    if event_id is None:
        event_id = new_id()
    elif not isinstance(event_id, str) or not event_id or len(event_id) > 256:
        raise Rejected(f"{stream.id_field!r} must be a non-empty string of at most 256 characters")
    elif _CONTROL.search(event_id):
        raise Rejected(f"{stream.id_field!r} contains a control character")
    extra = [k for k in raw if k not in stream.fields and k != stream.id_field]
    if extra:
        if stream.unknown_fields == "reject":
            name = str(extra[0])
            raise Rejected(
                f"unknown field {name!r} in stream {stream.name!r}"
                + did_you_mean(name, list(stream.fields))
            )
        if stream.unknown_fields == "keep":
            for k in extra:
                if _depth(raw[k]) > MAX_DEPTH:
                    raise Rejected(f"field {str(k)!r} is nested more than {MAX_DEPTH} levels deep")
            out.update({str(k): raw[k] for k in extra})
    out[stream.id_field] = event_id
    event_time = out[stream.time]
    _check_time(stream, event_time, policy)
    return ValidEvent(event_id, event_time, out)


def _shown(micros: int) -> str:
    """A time for a message, also one beyond what datetime can hold (years 1 to 9999)."""
    try:
        return from_micros(micros).isoformat()
    except (ValueError, OverflowError):
        return f"{micros} µs after 1970-01-01"


def _depth(value: Any, limit: int = MAX_DEPTH + 1) -> int:
    """How deeply ``value`` nests objects and arrays, counted up to ``limit``."""
    depth, level = 0, [value]
    while level and depth < limit:
        children = [
            c
            for v in level
            for c in (v.values() if isinstance(v, Mapping) else v if isinstance(v, list) else ())
        ]
        if not any(isinstance(v, Mapping | list) for v in level):
            break
        depth, level = depth + 1, children
    return depth


def _check_time(stream: Stream, event_time: int, policy: TimePolicy) -> None:
    if event_time < 0:
        raise Rejected(
            f"event time {_shown(event_time)} is before 1970-01-01; check the sender's clock "
            "and the time's unit"
        )
    if event_time > policy.now_us + policy.max_future_us:
        raise Rejected(
            f"event time {_shown(event_time)} is in the future "
            f"(now is {from_micros(policy.now_us).isoformat()}); check the sender's clock"
        )
    lateness = stream.allowed_lateness_us
    if lateness is not None and event_time < policy.now_us - lateness:
        raise Rejected(
            f"event time {_shown(event_time)} is later than stream "
            f"{stream.name!r} allows ({lateness / 1e6:.0f}s)"
        )
