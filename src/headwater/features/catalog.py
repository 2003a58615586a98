"""Resolving feature names to what computes them, and evaluating derived features."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from headwater.definitions import DefinitionError, Derived, Feature, FeatureColumn, HeadwaterError
from headwater.definitions.stream import did_you_mean
from headwater.features.plan import FeatureSetPlan, plan_feature_sets


class UnknownFeatureError(HeadwaterError, LookupError):
    """A requested feature is not defined in the project."""


_PANDAS_TYPES = {
    "int": "Int64",
    "float": "float64",
    "bool": "boolean",
    "string": "object",
    "timestamp": "Int64",
}


@dataclass
class Resolution:
    """What a request for some features needs: base columns per feature set, derived, context."""

    columns: dict[str, list[FeatureColumn]] = field(default_factory=dict)  # by plan id
    derived: list[Derived] = field(default_factory=list)  # in evaluation order
    context: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)


class FeatureCatalog:
    """Every feature output of a project, by name."""

    def __init__(self, features: Iterable[Feature], derived: Iterable[Derived]) -> None:
        self.plans = plan_feature_sets(features)
        self.plan_of: dict[str, FeatureSetPlan] = {}
        self.columns: dict[str, FeatureColumn] = {}
        for plan in self.plans:
            for column in plan.columns:
                if column.name in self.columns:
                    raise DefinitionError(f"two features produce the output {column.name!r}")
                self.columns[column.name] = column
                self.plan_of[column.name] = plan
        self.derived = {d.name: d for d in derived}
        for name, d in self.derived.items():
            if name in self.columns:
                raise DefinitionError(f"derived feature {name!r} has the name of a feature output")
            for i in d.inputs:
                if i not in self.columns and i not in self.derived:
                    raise DefinitionError(
                        f"derived feature {name!r} reads {i!r}, which is not a feature"
                        + did_you_mean(i, self.names)
                    )
        for name in self.derived:
            self._order([name], set())  # rejects cycles early

    @property
    def names(self) -> list[str]:
        return sorted([*self.columns, *self.derived])

    def _order(self, names: Sequence[str], visiting: set[str]) -> list[Derived]:
        out: list[Derived] = []
        for name in names:
            d = self.derived.get(name)
            if d is None:
                continue
            if name in visiting:
                raise DefinitionError(f"derived feature {name!r} depends on itself")
            out += self._order(d.inputs, visiting | {name})
            out.append(d)
        return list(dict.fromkeys(out))

    def resolve(self, names: Sequence[str]) -> Resolution:
        if isinstance(names, str):
            names = [names]
        res = Resolution(requested=list(names))
        for name in names:
            if name not in self.columns and name not in self.derived:
                raise UnknownFeatureError(
                    f"unknown feature {name!r}" + did_you_mean(name, self.names)
                )
        res.derived = self._order(names, set())
        base = [n for n in names if n in self.columns]
        base += [i for d in res.derived for i in d.inputs if i in self.columns]
        for name in dict.fromkeys(base):
            res.columns.setdefault(self.plan_of[name].id, []).append(self.columns[name])
        res.context = list(dict.fromkeys(c for d in res.derived for c in d.context))
        return res

    def plan(self, plan_id: str) -> FeatureSetPlan:
        return next(p for p in self.plans if p.id == plan_id)


def _frame_column(values: pa.Array | pa.ChunkedArray, numeric: bool) -> pd.Series:
    if numeric:
        values = values.cast(pa.float64())
    return values.to_pandas()


def evaluate_derived(
    arrays: dict[str, pa.Array | pa.ChunkedArray],
    numeric: set[str],
    derived: Sequence[Derived],
) -> dict[str, pa.Array]:
    """Evaluate derived features, in order, from Arrow columns of their inputs and context.

    Online and batch both call this with Arrow columns, so the function sees the same pandas
    frame either way: numeric features as float64 with NaN for null, others as objects.
    """
    arrays = dict(arrays)
    out: dict[str, pa.Array] = {}
    for d in derived:
        names = list(d.inputs) + list(d.context)
        frame = pd.DataFrame({n: _frame_column(arrays[n], n in numeric) for n in names})
        try:
            values = np.asarray(d.fn(frame))
        except Exception as exc:
            raise HeadwaterError(f"derived feature {d.name!r} failed: {exc!r}") from exc
        if values.shape != (len(frame),):
            raise HeadwaterError(
                f"derived feature {d.name!r} returned shape {values.shape}; "
                f"it must return one value per row ({len(frame)})"
            )
        result = pa.array(pd.Series(values).astype(_PANDAS_TYPES[d.dtype.value]), from_pandas=True)
        arrays[d.name] = out[d.name] = result
        if d.dtype.value in ("int", "float"):
            numeric.add(d.name)
    return out


def numeric_names(columns: Iterable[FeatureColumn]) -> set[str]:
    return {c.name for c in columns if c.feature.output_dtype in ("int", "float")}


def to_python(value: Any) -> Any:
    """A plain Python value for JSON: numpy scalars unwrapped, NaN and NA as None."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
