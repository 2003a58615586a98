"""A DAG of steps: each logged with its duration and outcome, retried, and cached by the hash
of its inputs and its own code or settings, so that a re-run with identical inputs reuses
the finished steps (a failed run resumes where it stopped). Steps whose inputs are ready run
at the same time, up to ``parallel`` at once (threads: the heavy work, fitting and joins,
runs outside the GIL)."""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from headwater.definitions.base import content_hash
from headwater.definitions.training import Node
from headwater.errors import HeadwaterError

Ref = tuple[str, str]  # (step, output); step "model" for what the definition gives


class StepFailed(HeadwaterError):
    """A pipeline step failed; the message names the step, the reason and how to resume."""

    def __init__(self, step: str, reason: str, resume: str) -> None:
        super().__init__(f"step {step!r} failed: {reason}\n  to resume: {resume}")
        self.step, self.reason = step, reason


@dataclass
class StepRecord:
    name: str
    status: str  # done | cached | failed | not run
    seconds: float
    attempts: int
    key: str
    error: str | None = None
    started: float = 0.0  # seconds after the pipeline started
    inputs: dict[str, str] = field(default_factory=dict)  # parameter -> "step.output"
    outputs: list[str] = field(default_factory=list)
    builtin: bool = True


@dataclass
class Task:
    """How to run one node: ``fn`` takes the node's inputs by parameter name and returns its
    output (several outputs: a tuple in order, or a dict); ``config`` is what besides the
    inputs decides the output (settings, the code of a step of yours)."""

    fn: Callable[..., Any]
    config: Any
    cache: bool = True
    retries: int | None = None


class Fresh:
    """A given value made anew for each step that reads it, inside the step (a failure of
    ``make`` is the step's, retried like it): e.g. a fresh estimator from user code."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


class Pipeline:
    """Runs a DAG of nodes, each at most ``retries + 1`` times (a task may say otherwise)."""

    def __init__(
        self,
        cache_dir: Path,
        retries: int,
        resume_hint: str,
        log: Callable[[str], None] = lambda _: None,
        parallel: int = 1,
    ) -> None:
        self.cache_dir, self.retries, self.resume_hint, self.log = (
            cache_dir,
            retries,
            resume_hint,
            log,
        )
        self.parallel = max(1, parallel)
        self.records: list[StepRecord] = []
        self._t0 = time.perf_counter()
        cache_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(name: str, config: Any, inputs: Mapping[str, str]) -> str:
        """A step's cache key: its name, its config and the keys of what it reads."""
        return content_hash([name, config, dict(sorted(inputs.items()))])

    def run(
        self,
        nodes: Sequence[Node],
        tasks: Mapping[str, Task],
        given: Mapping[str, tuple[Any, str]],
    ) -> dict[Ref, Any]:
        """Run every node (in ``nodes``' order where they wait for each other); ``given``:
        name -> (value, key) of what the definition gives. Returns every output. After a
        failure no other step starts; those running finish (and are cached), then
        ``StepFailed`` is raised for the first failure."""
        values: dict[Ref, Any] = {("model", g): v for g, (v, _) in given.items()}
        keys: dict[Ref, str] = {("model", g): k for g, (_, k) in given.items()}
        finished = {"model"}
        pending = list(nodes)
        running: dict[Future[tuple[dict[str, Any], str]], Node] = {}
        failure: StepFailed | None = None
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="step") as pool:
            while pending or running:
                if failure is None:
                    for node in [n for n in pending if _ready(n, finished)]:
                        pending.remove(node)
                        args = {p: values[ref] for p, ref in node.inputs.items()}
                        in_keys = {p: keys[ref] for p, ref in node.inputs.items()}
                        running[pool.submit(self._execute, node, tasks[node.name], args,
                                            in_keys)] = node  # fmt: skip
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    node = running.pop(future)
                    try:
                        outputs, key = future.result()
                    except StepFailed as exc:
                        failure = failure or exc
                        continue
                    for out in node.outputs:
                        values[(node.name, out)] = outputs[out]
                        keys[(node.name, out)] = content_hash([key, out])
                    finished.add(node.name)
        for node in pending:
            self.records.append(
                StepRecord(
                    node.name,
                    "not run",
                    0.0,
                    0,
                    "",
                    None,
                    0.0,
                    _refs(node),
                    list(node.outputs),
                    node.builtin,
                )  # fmt: skip
            )
        if failure is not None:
            raise failure
        return values

    def _execute(
        self, node: Node, task: Task, args: dict[str, Any], in_keys: dict[str, str]
    ) -> tuple[dict[str, Any], str]:
        name = node.name
        key = self.key(name, task.config, in_keys)
        path = self.cache_dir / f"{name}-{key}.pkl"
        start = time.perf_counter()

        def record(status: str, attempts: int, error: str | None = None) -> None:
            self._record(
                StepRecord(name, status, time.perf_counter() - start, attempts, key, error,
                           start - self._t0, _refs(node), list(node.outputs), node.builtin)
            )  # fmt: skip

        if task.cache and path.exists():
            try:
                with path.open("rb") as fh:
                    cached = pickle.load(fh)
            except Exception as exc:  # noqa: BLE001 - e.g. written by a release whose classes moved
                self.log(f"  {name}: cached output unreadable ({type(exc).__name__}), recomputing")
            else:
                record("cached", 0)
                return cached, key
        retries = self.retries if task.retries is None else task.retries
        error = ""
        attempt = 0
        for attempt in range(1, retries + 2):
            try:
                made = {p: v.make() if isinstance(v, Fresh) else v for p, v in args.items()}
                outputs = outputs_of(name, node.outputs, task.fn(**made))
            except HeadwaterError as exc:
                error = str(exc)
                break  # a data or definition problem: retrying gives the same answer
            except Exception as exc:  # noqa: BLE001 - any failure of user code fails the step
                error = f"{type(exc).__name__}: {exc}"
                self.log(f"  {name}: attempt {attempt} failed: {error}")
                continue
            if task.cache:
                _write(path, outputs)
            record("done", attempt)
            return outputs, key
        record("failed", min(attempt, retries + 1), error)
        raise StepFailed(name, error, self.resume_hint)

    def put(self, name: str, config: Any, value: Any, output: str) -> None:
        """Store the output of a step without inputs computed elsewhere (a training set
        built for several models at once): the step, run with this config, reuses it."""
        key = self.key(name, config, {})
        _write(self.cache_dir / f"{name}-{key}.pkl", {output: value})

    def _record(self, record: StepRecord) -> None:
        self.records.append(record)
        extra = f" ({record.error})" if record.error else ""
        self.log(f"  {record.name:<14} {record.status:<7} {record.seconds:7.2f}s{extra}")

    def summary(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in sorted(self.records, key=lambda r: r.started)]


def _ready(node: Node, finished: set[str]) -> bool:
    return all(step in finished for step, _ in node.inputs.values())


def _refs(node: Node) -> dict[str, str]:
    return {p: f"{step}.{out}" for p, (step, out) in node.inputs.items()}


def outputs_of(step: str, names: tuple[str, ...], result: Any) -> dict[str, Any]:
    """A step's result as {output: value}: one output is the value itself; several are a
    tuple in the declared order or a dict with exactly those keys."""
    if len(names) == 1:
        return {names[0]: result}
    if isinstance(result, dict) and set(result) == set(names):
        return dict(result)
    if isinstance(result, tuple) and len(result) == len(names):
        return dict(zip(names, result, strict=True))
    raise HeadwaterError(
        f"step {step!r} makes {', '.join(names)}: return them as a tuple in that order or "
        f"a dict with those keys, not {type(result).__name__}"
    )


def _write(path: Path, value: Any) -> None:
    """A step's output, whole or not at all (a temporary file of this process and thread,
    renamed)."""

    tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
    with tmp.open("wb") as fh:
        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
