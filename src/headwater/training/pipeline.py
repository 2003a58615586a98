"""A pipeline of steps: each logged with its duration and outcome, retried, and cached by the
hash of its inputs so that a re-run with identical inputs reuses the finished steps."""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from headwater.definitions.base import content_hash
from headwater.errors import HeadwaterError

T = TypeVar("T")


class StepFailed(HeadwaterError):
    """A pipeline step failed; the message names the step, the reason and how to resume."""

    def __init__(self, step: str, reason: str, resume: str) -> None:
        super().__init__(f"step {step!r} failed: {reason}\n  to resume: {resume}")
        self.step, self.reason = step, reason


@dataclass
class StepRecord:
    name: str
    status: str  # done | cached | failed
    seconds: float
    attempts: int
    key: str
    error: str | None = None


class Pipeline:
    """Runs named steps in order, each at most ``retries + 1`` times."""

    def __init__(
        self,
        cache_dir: Path,
        retries: int,
        resume_hint: str,
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.cache_dir, self.retries, self.resume_hint, self.log = (
            cache_dir,
            retries,
            resume_hint,
            log,
        )
        self.records: list[StepRecord] = []
        cache_dir.mkdir(parents=True, exist_ok=True)

    def step(
        self, name: str, inputs: Any, fn: Callable[[], T], cache: bool = True
    ) -> tuple[T, str]:
        """Run (or reuse) one step; returns its output and its key (for downstream steps)."""
        key = content_hash([name, inputs])
        path = self.cache_dir / f"{name}-{key}.pkl"
        start = time.perf_counter()
        if cache and path.exists():
            try:
                with path.open("rb") as fh:
                    value = pickle.load(fh)
            except Exception as exc:  # noqa: BLE001 - e.g. written by a release whose classes moved
                self.log(f"  {name}: cached output unreadable ({type(exc).__name__}), recomputing")
            else:
                self._record(StepRecord(name, "cached", time.perf_counter() - start, 0, key))
                return value, key
        error = ""
        for attempt in range(1, self.retries + 2):
            try:
                value = fn()
            except HeadwaterError as exc:
                error = str(exc)
                break  # a data or definition problem: retrying gives the same answer
            except Exception as exc:  # noqa: BLE001 - any failure of user code fails the step
                error = f"{type(exc).__name__}: {exc}"
                self.log(f"  {name}: attempt {attempt} failed: {error}")
                continue
            if cache:
                _write(path, value)
            self._record(StepRecord(name, "done", time.perf_counter() - start, attempt, key))
            return value, key
        self._record(
            StepRecord(
                name,
                "failed",
                time.perf_counter() - start,
                min(attempt, self.retries + 1),
                key,
                error,
            )
        )
        raise StepFailed(name, error, self.resume_hint)

    def put(self, name: str, inputs: Any, value: Any) -> None:
        """Store a step's output computed elsewhere (a training set built for several
        models at once): the step, run with these inputs, then reuses it."""
        _write(self.cache_dir / f"{name}-{content_hash([name, inputs])}.pkl", value)

    def _record(self, record: StepRecord) -> None:
        self.records.append(record)
        extra = f" ({record.error})" if record.error else ""
        self.log(f"  {record.name:<12} {record.status:<7} {record.seconds:7.2f}s{extra}")

    def summary(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.records]


def _write(path: Path, value: Any) -> None:
    """A step's output, whole or not at all (a temporary file of this process, renamed)."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
