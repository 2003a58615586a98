"""Online feature values: evaluated at "now" from the tiles in the online store."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from headwater.definitions import HeadwaterError
from headwater.features.catalog import FeatureCatalog, evaluate_derived, numeric_names, to_python
from headwater.features.plan import entity_key
from headwater.stores.online_base import OnlineStore


class MissingKeyError(HeadwaterError, ValueError):
    """A request lacks an entity key or a context field that its features need."""


class OnlineFeatures:
    """Reads feature values for entities from the online store."""

    def __init__(
        self, online: OnlineStore, catalog: FeatureCatalog, clock: Callable[[], int]
    ) -> None:
        self._online, self._catalog, self._clock = online, catalog, clock

    def get(
        self,
        rows: Sequence[Mapping[str, Any]],
        features: Sequence[str],
        at_us: int | None = None,
    ) -> list[dict[str, Any]]:
        """For each row (entity keys plus any request context), the requested features.

        Values are those at ``at_us`` (default: now) under the design's time semantics.
        """
        res = self._catalog.resolve(features)
        t = self._clock() if at_us is None else at_us
        values: dict[str, list[Any]] = {}
        for plan_id, columns in res.columns.items():
            plan = self._catalog.plan(plan_id)
            keys = [
                entity_key([_key(row, k, i) for k in plan.entity.keys])
                for i, row in enumerate(rows)
            ]
            distinct = list(dict.fromkeys(keys))
            blobs = dict(zip(distinct, self._online.get_many(plan.id, distinct), strict=True))
            decoded = {
                k: plan.evaluate(plan.decode(b) if b else None, columns, t)
                for k, b in blobs.items()
            }
            for column in columns:
                values[column.name] = [decoded[k][column.name] for k in keys]
        if res.derived:
            arrays: dict[str, pa.Array] = {n: pa.array(v) for n, v in values.items()}
            for c in res.context:
                arrays[c] = pa.array(
                    [_key(row, c, i, "context field") for i, row in enumerate(rows)]
                )
            numeric = numeric_names(c for cs in res.columns.values() for c in cs)
            for name, arr in evaluate_derived(arrays, numeric, res.derived).items():
                values[name] = [to_python(v) for v in arr.to_pylist()]
        return [{name: values[name][i] for name in res.requested} for i in range(len(rows))]


def _key(row: Mapping[str, Any], name: str, index: int, what: str = "entity key") -> Any:
    try:
        value = row[name]
    except KeyError:
        raise MissingKeyError(f"row {index} has no {what} {name!r}") from None
    if what == "context field":
        return value
    if value is None or isinstance(value, dict | list):
        raise MissingKeyError(f"row {index}: {what} {name!r} must be a string or number")
    return value
