"""Per-key rate limits: a token bucket per key, refilled continuously.

>>> t = [0.0]
>>> limits = RateLimits(rate=2, burst=2, monotonic=lambda: t[0])
>>> [limits.take("k") for _ in range(3)]
[0.0, 0.0, 0.5]
>>> t[0] = 0.5; limits.take("k")
0.0
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimits:
    """``take(key)`` spends one token of ``key``'s bucket (``rate`` per second, at most
    ``burst`` saved up): 0.0 when allowed, else the seconds until a token is back."""

    def __init__(
        self, rate: float, burst: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._monotonic = monotonic
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        now = self._monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
