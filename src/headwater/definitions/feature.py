"""Features: windowed aggregations of an entity over a stream, and derived features."""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from headwater.definitions.aggregation import NUMERIC_KINDS, Aggregation
from headwater.definitions.base import Definition, check_feature_name, check_name
from headwater.definitions.entity import Entity
from headwater.definitions.expectations import Expectation
from headwater.definitions.expr import Expr
from headwater.definitions.stream import Stream
from headwater.definitions.types import DType, parse_dtype
from headwater.definitions.windows import LIFETIME, default_hop, parse_duration, window_label
from headwater.errors import DefinitionError, did_you_mean

# Over a PII field, only aggregations that never return one of its values (a pseudonym is
# still one: it links the entity to other data).
PII_SAFE_KINDS = frozenset({"count", "count_distinct"})

WindowSpec = str | timedelta | None


@dataclass(frozen=True)
class FeatureColumn:
    """One output value: a feature evaluated over one window (None: lifetime)."""

    name: str
    feature: Feature
    window_us: int | None
    hop_us: int | None

    @property
    def aggregation(self) -> Aggregation:
        return self.feature.aggregation


class Feature(Definition):
    """An aggregation of an entity's events on one stream, over one or more windows.

    Each window gives one output named ``{name}_{window}``:

    >>> user = Entity("user", keys="user_id", owner="growth", description="A shopper")
    >>> views = Stream("views", fields={"user_id": "string"}, key="user_id", time="ts",
    ...                owner="web", description="Page views")
    >>> from headwater.definitions import aggregation as agg
    >>> f = Feature("views", entity=user, stream=views, aggregation=agg.count(),
    ...             windows=["1h", "7d", "lifetime"], owner="growth", description="Views")
    >>> [c.name for c in f.columns]
    ['views_1h', 'views_7d', 'views_lifetime']

    ``namespace`` (a team's, say) prefixes the feature's name and outputs, so that two teams
    may each have a ``views``: ``Feature("views", namespace="growth", ...)`` is the feature
    ``growth.views``, its outputs ``growth.views_1h``...
    """

    kind = "feature"

    def __init__(
        self,
        name: str,
        *,
        entity: Entity,
        stream: Stream,
        aggregation: Aggregation,
        windows: Sequence[WindowSpec] = (LIFETIME,),
        where: Expr | None = None,
        hop: str | timedelta | None = None,
        owner: str | None = None,
        description: str | None = None,
        deprecated: bool = False,
        tags: Sequence[str] = (),
        namespace: str | None = None,
        expectations: Sequence[Expectation] = (),
    ) -> None:
        self._init_common(name, owner, description, deprecated, tuple(tags), namespace)
        name = self.name
        self.entity, self.stream, self.aggregation, self.where = entity, stream, aggregation, where
        self._check_fields()
        if isinstance(windows, str | timedelta) or windows is None:
            windows = [windows]
        if not windows:
            raise DefinitionError(f"feature {name!r} needs at least one window (or 'lifetime')")
        hop_us = None if hop is None else parse_duration(hop)
        columns = []
        for w in windows:
            w_us = None if w is None or w == LIFETIME else parse_duration(w)
            h_us = None if w_us is None else (hop_us or default_hop(w_us))
            if w_us is not None and h_us is not None and h_us > w_us:
                raise DefinitionError(f"feature {name!r}: hop {hop!r} is longer than window {w!r}")
            columns.append(FeatureColumn(f"{name}_{window_label(w_us)}", self, w_us, h_us))
        names = [c.name for c in columns]
        if len(set(names)) != len(names):
            raise DefinitionError(f"feature {name!r} lists the same window twice")
        self.columns: tuple[FeatureColumn, ...] = tuple(columns)
        for e in expectations:
            if not isinstance(e, Expectation) or e.column not in names:
                raise DefinitionError(
                    f"feature {name!r}: an expectation is Expectation(column, ...) on one of its "
                    f"outputs {names}" + did_you_mean(getattr(e, "column", ""), names)
                )
        self.expectations = tuple(expectations)

    def _check_fields(self) -> None:
        for key in self.entity.keys:
            if key not in self.stream.fields:
                raise DefinitionError(
                    f"feature {self.name!r}: stream {self.stream.name!r} has no field {key!r} "
                    f"to identify entity {self.entity.name!r}"
                )
        field = self.aggregation.field
        if field is not None:
            if self.stream.field(field).pii and self.aggregation.kind not in PII_SAFE_KINDS:
                raise DefinitionError(
                    f"feature {self.name!r}: {self.aggregation.kind} of PII field {field!r} "
                    f"would expose its values; over a PII field only "
                    f"{' and '.join(sorted(PII_SAFE_KINDS))} are allowed"
                )
            dtype = self.stream.field(field).dtype
            if self.aggregation.kind in NUMERIC_KINDS and dtype not in (DType.INT, DType.FLOAT):
                raise DefinitionError(
                    f"feature {self.name!r}: {self.aggregation.kind} needs a numeric field, "
                    f"but {field!r} is {dtype.value}"
                )
        for f in self.where.fields() if self.where is not None else ():
            self.stream.field(f)

    @property
    def output_dtype(self) -> str:
        kind = self.aggregation.kind
        if kind in ("count", "count_distinct"):
            return "int"
        if kind in ("mean", "variance", "stddev"):
            return "float"
        field_type = self.stream.field(self.aggregation.field or "").dtype.value
        return f"list[{field_type}]" if kind == "last_k" else field_type

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "entity": self.entity.spec(),
            "stream": self.stream.name,
            "stream_fields": {
                f: self.stream.fields[f].dtype.value
                for f in sorted({*self.entity.keys, self.aggregation.field or self.stream.time})
            },
            "aggregation": self.aggregation.spec(),
            "where": None if self.where is None else self.where.spec(),
            "windows": [[c.window_us, c.hop_us] for c in self.columns],
        }


def function_source(fn: Callable[..., Any]) -> str:
    """The source of a function, for hashing; bytecode when the source is not available."""
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        return code.co_code.hex() if code is not None else repr(fn)


class Derived(Definition):
    """A feature computed by a vectorized function of other features and of request context.

    ``fn`` receives the columns (``c.name`` or ``c["name"]``: numpy arrays, float64 with NaN
    for null numbers) and returns one value per row. The same function runs in batch and
    online, e.g. ``fn=lambda c: c.spend_7d / np.where(c.orders_7d > 0, c.orders_7d, np.nan)``
    (a namespaced input by its whole name: ``c["growth.spend_7d"]``). ``namespace``: as for
    ``Feature``.
    """

    kind = "derived"

    def __init__(
        self,
        name: str,
        *,
        inputs: Sequence[str],
        fn: Callable[[Any], Any],
        context: Sequence[str] = (),
        dtype: str = "float",
        owner: str | None = None,
        description: str | None = None,
        deprecated: bool = False,
        tags: Sequence[str] = (),
        namespace: str | None = None,
    ) -> None:
        self._init_common(name, owner, description, deprecated, tuple(tags), namespace)
        name = self.name
        if not inputs and not context:
            raise DefinitionError(f"derived feature {name!r} needs inputs or context fields")
        if not callable(fn):
            raise DefinitionError(f"derived feature {name!r}: fn must be callable")
        self.inputs = tuple(check_feature_name(i) for i in inputs)
        self.context = tuple(check_name("context field", c) for c in context)
        self.fn = fn
        self.dtype = parse_dtype(dtype)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "inputs": list(self.inputs),
            "context": list(self.context),
            "dtype": self.dtype.value,
            "fn": function_source(self.fn),
        }
