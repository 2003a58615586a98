"""How a model is trained beyond the fit: steps of your own, a hyperparameter search, and the
segments its evaluation and monitoring report one by one."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any

from headwater.definitions.base import check_feature_name
from headwater.definitions.windows import parse_duration
from headwater.errors import DefinitionError

# What the built-in steps make, by name: a step of your own reads any of them by naming a
# parameter after it. A step may replace the ones in REPLACEABLE (every later reader gets its
# output instead, and it may read the one it replaces, e.g. to wrap a fitted estimator).
ARTIFACTS = {
    "train": "the training rows (a DataFrame: entity keys, timestamp, features, label)",
    "test": "the held-out rows (same columns), later in time than every training row",
    "features": "the names of the features the model is fitted on",
    "estimator": "a fresh, unfitted estimator from the model's `estimator`",
    "params": "the hyperparameters the fit applies (the search's best; {} without a search)",
    "fitted": "the fitted estimator that is evaluated and registered",
    "validation": "the data checks' report (rows, null rates, ranges)",
    "evaluation": "the held-out metrics, comparisons, importances and segments",
}
REPLACEABLE = ("train", "features", "estimator", "params", "fitted")
INTERNAL = ("dataset", "split", "signature", "search", "profile")  # not for steps of yours


class Step:
    """A training step of your own: a function whose parameters are named after what it reads
    (see ``ARTIFACTS``, or another step's outputs) and whose result is what it makes
    (``outputs``: one name, or several returned as a tuple or a dict). Steps compose with the
    built-in ones (training set, validation, split, search, fit, evaluation, profile) into a
    DAG: steps that do not depend on each other run in parallel; each is cached by the hash
    of its inputs and its code, retried ``retries`` times (default: the model's) and resumed
    from the cache after a failure. Usually made with ``@step``::

        @step(outputs="features")
        def drop_constant(train, features):
            return [f for f in features if train[f].nunique(dropna=False) > 1]
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        outputs: str | Sequence[str],
        name: str | None = None,
        retries: int | None = None,
        cache: bool = True,
    ) -> None:
        if not callable(fn):
            raise DefinitionError("a step is a function")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", ""))
        if not self.name.isidentifier() or self.name.startswith("_"):
            raise DefinitionError(f"step name {self.name!r}: use a name like 'select_features'")
        names = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        if not names:
            raise DefinitionError(f"step {self.name!r} makes nothing: give it outputs")
        for out in names:
            if not out.isidentifier():
                raise DefinitionError(f"step {self.name!r}: output {out!r} is not a name")
            if (out in ARTIFACTS or out in INTERNAL) and out not in REPLACEABLE:
                raise DefinitionError(
                    f"step {self.name!r}: {out!r} is made by a built-in step and cannot be "
                    f"replaced; a step may replace {', '.join(REPLACEABLE)}"
                )
        if len(set(names)) != len(names):
            raise DefinitionError(f"step {self.name!r} names an output twice")
        self.outputs = names
        params = inspect.signature(fn).parameters.values()
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise DefinitionError(
                    f"step {self.name!r}: *args/**kwargs cannot name inputs; name each one"
                )
        self.inputs = tuple(p.name for p in params)
        if retries is not None and retries < 0:
            raise DefinitionError(f"step {self.name!r}: retries must be 0 or more")
        self.retries, self.cache = retries, cache

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Step({self.name!r}, inputs={self.inputs}, outputs={self.outputs})"


def step(
    outputs: str | Sequence[str],
    *,
    name: str | None = None,
    retries: int | None = None,
    cache: bool = True,
) -> Callable[[Callable[..., Any]], Step]:
    """Make a function a training ``Step`` (see there)."""

    def wrap(fn: Callable[..., Any]) -> Step:
        return Step(fn, outputs=outputs, name=name, retries=retries, cache=cache)

    return wrap


def check_steps(model: str, steps: Sequence[Step], builtin: Sequence[str]) -> tuple[Step, ...]:
    """Steps whose inputs exist: each reads a built-in artifact or an output of another step
    (one that does not, directly or not, read this step's own outputs)."""
    made: dict[str, str] = {}
    for s in steps:
        if not isinstance(s, Step):
            raise DefinitionError(
                f"model {model!r}: steps are made with @step(outputs=...); got {s!r}"
            )
        for out in s.outputs:
            if out in made and out not in REPLACEABLE:
                raise DefinitionError(
                    f"model {model!r}: steps {made[out]!r} and {s.name!r} both make {out!r}"
                )
            made.setdefault(out, s.name)
    names = [s.name for s in steps]
    if len(set(names)) != len(names) or set(names) & {*builtin, "register"}:
        raise DefinitionError(f"model {model!r}: step names must be unique and not built-in")
    known = set(ARTIFACTS) | set(made)
    for s in steps:
        for i in s.inputs:
            if i not in known:
                raise DefinitionError(
                    f"model {model!r}: step {s.name!r} reads {i!r}, which no step makes; "
                    f"it can read {', '.join(sorted(known))}"
                )
    return tuple(steps)


# The built-in steps, in order: (name, inputs, outputs). "features", "estimator" and (without
# a search) "params" are given by the model's definition, not made by a step.
BUILTIN = (
    ("training_set", (), ("dataset",)),
    ("validate", ("dataset",), ("validation",)),
    ("split", ("dataset",), ("split",)),
    ("train_rows", ("dataset", "split"), ("train",)),
    ("test_rows", ("dataset", "split"), ("test",)),
    ("search", ("train", "features", "estimator"), ("params", "search")),
    ("fit", ("train", "features", "estimator", "params"), ("fitted", "signature")),
    ("evaluate", ("test", "fitted", "signature"), ("evaluation",)),
    ("profile", ("train", "signature", "evaluation"), ("profile",)),
)
GIVEN = ("features", "estimator", "params", "search")
Ref = tuple[str, str]  # (step, output); step "model" for what the definition gives


@dataclass(frozen=True)
class Node:
    """One step of a training DAG: what it reads (parameter -> (step, output); step "model"
    for what the definition gives) and what it makes."""

    name: str
    inputs: dict[str, tuple[str, str]]
    outputs: tuple[str, ...]
    builtin: bool


def plan(model: str, steps: Sequence[Step], search: bool) -> list[Node]:
    """The DAG of a model's training, in an order where every step follows what it reads.

    Each name (``train``, ``fitted``...) is made by a built-in step (or the definition) and
    then by every step of yours that replaces it, in the order they are declared: a step
    reads the latest of them, and a step that replaces a name reads the one before its own.
    A step that would wait for itself (it reads, directly or not, what is made from its own
    output) is refused."""
    specs, chains = _chains(steps, search)
    nodes = []
    for name, inputs, outputs, builtin in specs:
        bound = {}
        for i in inputs:
            chain = chains[i]
            mine = [k for k, (producer, _) in enumerate(chain) if producer == name]
            if mine and mine[0] == 0:
                raise DefinitionError(f"model {model!r}: step {name!r} reads its own {i!r}")
            bound[i] = chain[mine[0] - 1] if mine else chain[-1]
        nodes.append(Node(name, bound, tuple(outputs), builtin))
    return _ordered(model, nodes)


def finals(model: str, steps: Sequence[Step], search: bool) -> dict[str, tuple[str, str]]:
    """Where each name's final value comes from: the last step to make it."""
    return {name: chain[-1] for name, chain in _chains(steps, search)[1].items()}


Spec = tuple[str, tuple[str, ...], tuple[str, ...], bool]  # name, inputs, outputs, built-in


def _chains(steps: Sequence[Step], search: bool) -> tuple[list[Spec], dict[str, list[Ref]]]:
    """The steps, and each name's makers in order (the definition, if it gives it, first)."""
    specs: list[Spec] = [(n, i, o, True) for n, i, o in BUILTIN if search or n != "search"]
    specs += [(s.name, s.inputs, s.outputs, False) for s in steps]
    chains: dict[str, list[Ref]] = {
        g: [("model", g)] for g in GIVEN if not search or g not in ("params", "search")
    }
    for name, _, outputs, _ in specs:
        for out in outputs:
            chains.setdefault(out, []).append((name, out))
    return specs, chains


def _ordered(model: str, nodes: list[Node]) -> list[Node]:
    by_name = {n.name: n for n in nodes}
    done: set[str] = {"model"}
    out: list[Node] = []
    waiting = list(nodes)
    while waiting:
        ready = [n for n in waiting if all(p in done for p, _ in n.inputs.values())]
        if not ready:
            stuck = ", ".join(n.name for n in waiting if not n.builtin) or "?"
            raise DefinitionError(
                f"model {model!r}: steps {stuck} wait for each other (a step reads what is "
                "made from its own output); read the earlier value instead, or fit inside "
                "the step"
            )
        for n in ready:
            done.add(n.name)
            out.append(by_name[n.name])
        waiting = [n for n in waiting if n.name not in done]
    return out


# -- hyperparameter search ---------------------------------------------------------------


@dataclass(frozen=True)
class Int:
    """An integer hyperparameter in [low, high] (``log``: sampled on a log scale)."""

    low: int
    high: int
    log: bool = False
    step: int = 1


@dataclass(frozen=True)
class Float:
    """A real hyperparameter in [low, high] (``log``: sampled on a log scale)."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of a few values (numbers, strings, booleans or None)."""

    values: tuple[Any, ...]

    def __init__(self, values: Sequence[Any]) -> None:
        object.__setattr__(self, "values", tuple(values))


HIGHER_IS_BETTER = {"auc": True, "precision_at_k": True, "recall_at_k": True,
                    "log_loss": False, "brier": False, "rmse": False, "mae": False}  # fmt: skip


@dataclass(frozen=True)
class Search:
    """A hyperparameter search (Optuna's TPE sampler, seeded): at most ``trials`` trials and
    ``timeout`` of wall time, each fitting the model's estimator with the sampled ``space``
    applied (``set_params``) on the training rows but the last ``validation_fraction`` of
    their sample times, scored by ``metric`` (default: the promotion policy's) on those.
    The best parameters are fitted on all the training rows; the held-out rows stay unseen
    until the evaluation. Every trial is a run of its own, child of the training run."""

    space: dict[str, Int | Float | Choice]
    trials: int = 20
    timeout: str | timedelta | None = None
    metric: str | None = None
    validation_fraction: float = 0.25
    seed: int = 0
    timeout_us: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.space:
            raise DefinitionError("Search(space=...) needs at least one hyperparameter")
        for name, dist in self.space.items():
            if not isinstance(dist, Int | Float | Choice):
                raise DefinitionError(
                    f"search space {name!r}: use Int(low, high), Float(low, high) or "
                    f"Choice([...]), not {dist!r}"
                )
            if isinstance(dist, Int | Float) and not dist.low <= dist.high:
                raise DefinitionError(f"search space {name!r}: low must not exceed high")
            if isinstance(dist, Int | Float) and dist.log and dist.low <= 0:
                raise DefinitionError(f"search space {name!r}: a log scale needs low > 0")
            if isinstance(dist, Choice) and not dist.values:
                raise DefinitionError(f"search space {name!r}: Choice needs values")
        if self.trials < 1:
            raise DefinitionError("Search(trials=...) must be at least 1")
        if not 0 < self.validation_fraction < 1:
            raise DefinitionError("Search(validation_fraction=...) must be between 0 and 1")
        if self.metric is not None and self.metric not in HIGHER_IS_BETTER:
            raise DefinitionError(
                f"Search(metric={self.metric!r}): use one of {', '.join(HIGHER_IS_BETTER)}"
            )
        if self.timeout is not None:
            object.__setattr__(self, "timeout_us", parse_duration(self.timeout))

    def spec(self) -> dict[str, Any]:
        return {
            "space": {
                k: {"kind": type(v).__name__.lower(), **vars(v)} for k, v in self.space.items()
            },
            "trials": self.trials,
            "timeout_us": self.timeout_us,
            "metric": self.metric,
            "validation_fraction": self.validation_fraction,
            "seed": self.seed,
        }


# -- segments ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A way to split examples and live predictions into groups, each reported on its own: a
    feature of the model (or any feature, or a service's context field), by value, or by
    ``bins`` for numbers (``bins=(0, 3, 10)``: below 0, [0, 3), [3, 10), 10 and above).
    Groups with fewer than ``min_rows`` labelled rows are reported but left out of the
    largest gap between groups. A PII field cannot segment (its values would be printed)."""

    name: str
    bins: tuple[float, ...] = ()
    min_rows: int = 30

    def __init__(self, name: str, bins: Sequence[float] = (), min_rows: int = 30) -> None:
        object.__setattr__(self, "name", check_feature_name(name))
        edges = tuple(float(b) for b in bins)
        if any(b >= c for b, c in zip(edges, edges[1:], strict=False)):
            raise DefinitionError(f"segment {name!r}: bins must increase")
        if any(math.isnan(b) for b in edges):
            raise DefinitionError(f"segment {name!r}: bins must be numbers")
        object.__setattr__(self, "bins", edges)
        object.__setattr__(self, "min_rows", int(min_rows))

    def group(self, value: Any) -> str:
        """The group a value belongs to, as shown in reports."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "(missing)"
        if not self.bins:
            if isinstance(value, float) and value.is_integer():
                return str(int(value))
            return str(value)
        try:
            x = float(value)
        except (TypeError, ValueError):
            return "(not a number)"
        return self.labels[sum(x >= b for b in self.bins)]

    @cached_property
    def labels(self) -> list[str]:
        """The bins' groups from low to high: below the first edge, between edges, from the
        last edge up (none without bins)."""
        edges = self.bins
        if not edges:
            return []
        between = [f"[{_num(a)}, {_num(b)})" for a, b in zip(edges, edges[1:], strict=False)]
        return [f"< {_num(edges[0])}", *between, f">= {_num(edges[-1])}"]

    def ordered(self, groups: Sequence[str]) -> list[str]:
        """Groups in a reading order: bins from low to high, values sorted, missing last."""
        rank = {g: i for i, g in enumerate(self.labels)}
        return sorted(groups, key=lambda g: (g.startswith("("), rank.get(g, len(rank)), g))

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "bins": list(self.bins), "min_rows": self.min_rows}


def _num(x: float) -> str:
    return str(int(x)) if x.is_integer() else f"{x:g}"


def segments_of(owner: str, segments: Sequence[str | Segment]) -> tuple[Segment, ...]:
    out = tuple(s if isinstance(s, Segment) else Segment(s) for s in segments)
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise DefinitionError(f"{owner}: a segment is named twice")
    return out
