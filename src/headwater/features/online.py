"""Online feature values: evaluated at "now" from the tiles in the online store."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
        return self.get_with_presence(rows, features, at_us)[0]

    def get_with_presence(
        self,
        rows: Sequence[Mapping[str, Any]],
        features: Sequence[str],
        at_us: int | None = None,
    ) -> tuple[list[dict[str, Any]], list[bool]]:
        """``get``, plus for each row whether the store holds any state of its entity."""
        res = self._catalog.resolve(features)
        known = [False] * len(rows)
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
            for i, k in enumerate(keys):
                known[i] = known[i] or blobs[k] is not None
        if res.derived:
            inputs: dict[str, Any] = dict(values)
            for c in res.context:
                inputs[c] = [_key(row, c, i, "context field") for i, row in enumerate(rows)]
            numeric = numeric_names(c for cs in res.columns.values() for c in cs)
            for name, array in evaluate_derived(inputs, numeric, res.derived).items():
                values[name] = [to_python(v) for v in array.tolist()]
        out = [{name: values[name][i] for name in res.requested} for i in range(len(rows))]
        return out, known


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
