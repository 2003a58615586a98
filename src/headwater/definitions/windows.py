"""Durations, windows and hops, in integer microseconds so both engines agree exactly."""

from __future__ import annotations

import re
from datetime import timedelta

from headwater.errors import DefinitionError

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
_UNITS = {"s": SECOND, "m": MINUTE, "min": MINUTE, "h": HOUR, "d": DAY, "w": 7 * DAY}
_DURATION = re.compile(r"^\s*(\d+)\s*(s|min|m|h|d|w)\s*$")
LIFETIME = "lifetime"


def parse_duration(value: str | timedelta | int) -> int:
    """A duration in microseconds from "90s", "5m", "1h", "7d", "2w" or a timedelta.

    >>> parse_duration("1h") == HOUR
    True
    """
    if isinstance(value, timedelta):
        micros = round(value.total_seconds() * SECOND)
    elif isinstance(value, int) and not isinstance(value, bool):
        micros = value
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        micros = int(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise DefinitionError(
            f"cannot read {value!r} as a duration; write e.g. '30m', '1h', '7d' or a timedelta"
        )
    if micros <= 0:
        raise DefinitionError(f"a duration must be positive, got {value!r}")
    return micros


def default_hop(window_us: int) -> int:
    """Chronon's rule: W >= 12d -> 1d, W >= 12h -> 1h, else 5 minutes."""
    if window_us >= 12 * DAY:
        return DAY
    if window_us >= 12 * HOUR:
        return HOUR
    return 5 * MINUTE


def window_label(window_us: int | None) -> str:
    """The suffix of a feature name: "1h", "7d", "90m" or "lifetime"."""
    if window_us is None:
        return LIFETIME
    for unit, size in (("w", 7 * DAY), ("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", SECOND)):
        if window_us % size == 0 and (unit != "w"):
            return f"{window_us // size}{unit}"
    return f"{window_us}us"


def window_start(t_us: int, window_us: int, hop_us: int) -> int:
    """The first instant a window of W and hop h evaluated at t covers: floor((t-W)/h)*h."""
    return ((t_us - window_us) // hop_us) * hop_us
