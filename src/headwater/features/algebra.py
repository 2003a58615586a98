"""The aggregation algebra: init, update, merge and finalize over partial aggregates.

Partials are plain lists and numbers so tiles serialize as they are; merge and finalize also
take them as tuples (the online path reads decoded states as tuples). The stream processor and
online reads use this module; the batch engine compiles the same definitions to SQL, and the
property tests check that both agree with a brute-force evaluation.

>>> alg = ALGEBRAS["mean"]
>>> a = alg.update(alg.update(alg.init(), 2.0, 0, 0), 4.0, 1, 1)
>>> alg.finalize(alg.merge(a, alg.update(alg.init(), 6.0, 2, 2)))
4.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Algebra:
    """How one aggregation kind builds, combines and reads its partial aggregate."""

    init: Any
    update: Any  # (state, value, event_time, offset) -> state
    merge: Any  # (a, b) -> new state, inputs untouched
    finalize: Any  # state -> value


def _count_update(s: int, v: Any, ts: int, off: int) -> int:
    return s + 1


def _sum_update(s: Any, v: Any, ts: int, off: int) -> Any:
    return s + v


def _mean_update(s: list[Any], v: Any, ts: int, off: int) -> list[Any]:
    s[0] += 1
    s[1] += v
    return s


def _mean_final(s: list[Any]) -> float | None:
    return s[1] / s[0] if s[0] else None


def _moments_update(s: list[Any], v: Any, ts: int, off: int) -> list[Any]:
    # Welford: s = [n, mean, m2]
    n = s[0] + 1
    delta = v - s[1]
    mean = s[1] + delta / n
    s[2] += delta * (v - mean)
    s[0], s[1] = n, mean
    return s


def _moments_merge(a: list[Any], b: list[Any]) -> list[Any]:
    # Chan et al.'s parallel combination of moments.
    if not a[0]:
        return list(b)
    if not b[0]:
        return list(a)
    n = a[0] + b[0]
    delta = b[1] - a[1]
    mean = a[1] + delta * b[0] / n
    return [n, mean, a[2] + b[2] + delta * delta * a[0] * b[0] / n]


def _variance_final(s: list[Any]) -> float | None:
    return max(s[2], 0.0) / s[0] if s[0] else None


def _stddev_final(s: list[Any]) -> float | None:
    var = _variance_final(s)
    return None if var is None else math.sqrt(var)


def _min_update(s: Any, v: Any, ts: int, off: int) -> Any:
    return v if s is None or v < s else s


def _min_merge(a: Any, b: Any) -> Any:
    return b if a is None or (b is not None and b < a) else a


def _max_update(s: Any, v: Any, ts: int, off: int) -> Any:
    return v if s is None or v > s else s


def _max_merge(a: Any, b: Any) -> Any:
    return b if a is None or (b is not None and b > a) else a


def _last_update(s: Any, v: Any, ts: int, off: int) -> Any:
    # Ordered by (event time, log offset): the later in the log wins a tie.
    return [ts, off, v] if s is None or (ts, off) > (s[0], s[1]) else s


def _last_merge(a: Any, b: Any) -> Any:
    return b if a is None or (b is not None and (b[0], b[1]) > (a[0], a[1])) else a


def _first_update(s: Any, v: Any, ts: int, off: int) -> Any:
    return [ts, off, v] if s is None or (ts, off) < (s[0], s[1]) else s


def _first_merge(a: Any, b: Any) -> Any:
    return b if a is None or (b is not None and (b[0], b[1]) < (a[0], a[1])) else a


def _value(s: Any) -> Any:
    return None if s is None else s[2]


def _distinct_update(s: set[Any], v: Any, ts: int, off: int) -> set[Any]:
    s.add(v)
    return s


def last_k_algebra(k: int) -> Algebra:
    """Partials of the k latest (time, offset, value) triples, latest first."""

    def update(s: list[Any], v: Any, ts: int, off: int) -> list[Any]:
        if not s or (ts, off) > (s[0][0], s[0][1]):  # the common case: events in order
            s.insert(0, [ts, off, v])
            del s[k:]
            return s
        if len(s) >= k and (ts, off) < (s[-1][0], s[-1][1]):
            return s
        s.append([ts, off, v])
        s.sort(key=lambda e: (e[0], e[1]), reverse=True)
        del s[k:]
        return s

    def merge(a: list[Any], b: list[Any]) -> list[Any]:
        return sorted([*a, *b], key=lambda e: (e[0], e[1]), reverse=True)[:k]

    return Algebra(list, update, merge, lambda s: [e[2] for e in s])


ALGEBRAS: dict[str, Algebra] = {
    "count": Algebra(lambda: 0, _count_update, lambda a, b: a + b, lambda s: s),
    "sum": Algebra(lambda: 0, _sum_update, lambda a, b: a + b, lambda s: s),
    "mean": Algebra(
        lambda: [0, 0], _mean_update, lambda a, b: [a[0] + b[0], a[1] + b[1]], _mean_final
    ),
    "variance": Algebra(lambda: [0, 0.0, 0.0], _moments_update, _moments_merge, _variance_final),
    "stddev": Algebra(lambda: [0, 0.0, 0.0], _moments_update, _moments_merge, _stddev_final),
    "min": Algebra(lambda: None, _min_update, _min_merge, lambda s: s),
    "max": Algebra(lambda: None, _max_update, _max_merge, lambda s: s),
    "last": Algebra(lambda: None, _last_update, _last_merge, _value),
    "first": Algebra(lambda: None, _first_update, _first_merge, _value),
    "count_distinct": Algebra(set, _distinct_update, lambda a, b: a | b, len),
}


def algebra_for(kind: str, k: int | None = None) -> Algebra:
    if kind == "last_k":
        return last_k_algebra(k or 1)
    return ALGEBRAS[kind]
