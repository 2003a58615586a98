"""A cache for figures the UI computes from the log that cannot go stale: each entry is kept
with the key it was computed at (log end offsets, the day), and recomputed when that changes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class Memo:
    """``get(name, key, compute)``: the value computed for ``name`` at ``key``.

    >>> memo, calls = Memo(), []
    >>> def compute():
    ...     calls.append(1)
    ...     return len(calls)
    >>> memo.get("a", (1,), compute), memo.get("a", (1,), compute), memo.get("a", (2,), compute)
    (1, 1, 2)
    """

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, tuple[Hashable, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def peek(self, name: Hashable) -> Any:
        """What is kept for ``name`` whatever its key (None if nothing is): for figures that
        are brought up to date from where they were, not recomputed."""
        with self._lock:
            found = self._entries.get(name)
            return None if found is None else found[1]

    def put(self, name: Hashable, value: Any, key: Hashable = None) -> None:
        with self._lock:
            self._entries[name] = (key, value)
            self._entries.move_to_end(name)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def get(self, name: Hashable, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            found = self._entries.get(name)
            if found is not None and found[0] == key:
                self._entries.move_to_end(name)
                return found[1]  # type: ignore[no-any-return]
        value = compute()
        self.put(name, value, key)
        return value
