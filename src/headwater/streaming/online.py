"""Online feature values: evaluated at "now" from the tiles in the online store."""

from __future__ import annotations

import atexit
import gc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from headwater.definitions import FeatureColumn, HeadwaterError
from headwater.features.catalog import (
    FeatureCatalog,
    Resolution,
    evaluate_derived,
    numeric_names,
    to_python,
)
from headwater.features.plan import FeatureSetPlan, entity_key
from headwater.privacy.policies import KeyPseudonyms
from headwater.stores.online.base import OnlineStore

_UNFREEZE_AT_EXIT: list[bool] = []


def any_known(by_entity: Mapping[str, list[bool]], rows: int) -> list[bool]:
    """Per row, whether any of its entities has state (``get_with_entities``' flags)."""
    if not by_entity:
        return [False] * rows
    return [any(flags) for flags in zip(*by_entity.values(), strict=True)]


class MissingKeyError(HeadwaterError, ValueError):
    """A request lacks an entity key or a context field that its features need."""


@dataclass(frozen=True)
class _ReadPlan:
    """What reading one list of features needs, worked out once per list and reused."""

    res: Resolution
    sets: list[tuple[FeatureSetPlan, list[FeatureColumn]]]
    numeric: set[str]


class OnlineFeatures:
    """Reads feature values for entities from the online store.

    The serving hot path: one store round trip for every feature set of a request, the
    resolution of a feature list worked out once, and decoded states kept while their
    stored bytes are unchanged (``cache_size`` entities per feature set).
    """

    def __init__(
        self,
        online: OnlineStore,
        catalog: FeatureCatalog,
        clock: Callable[[], int],
        cache_size: int = 50_000,
        keys: KeyPseudonyms | None = None,
    ) -> None:
        self._online, self._catalog, self._clock = online, catalog, clock
        # clear ids of PII keys, as the pseudonyms the store holds
        self.entity_keys = keys or KeyPseudonyms()
        self._plans: dict[tuple[str, ...], _ReadPlan] = {}
        self._decoded: dict[str, dict[str, tuple[bytes, dict[str, Any]]]] = {}
        self._cache_size = cache_size
        self._added = 0
        # A server sets this: gc.freeze() concerns the whole process, an embedding
        # application may not want it.
        self.freeze_cached_states = False

    def get(
        self,
        rows: Sequence[Mapping[str, Any]],
        features: Sequence[str],
        at_us: int | None = None,
    ) -> list[dict[str, Any]]:
        """For each row (entity keys plus any request context), the requested features.

        Values are those at ``at_us`` (default: now) under the design's time semantics.
        """
        rows = self.entity_keys.rows(rows)
        return self.get_with_presence(rows, features, at_us)[0]

    def _read_plan(self, features: Sequence[str]) -> _ReadPlan:
        key = (features,) if isinstance(features, str) else tuple(features)
        found = self._plans.get(key)
        if found is None:
            res = self._catalog.resolve(list(key))
            sets = [(self._catalog.plan(pid), cols) for pid, cols in res.columns.items()]
            numeric = numeric_names(c for cs in res.columns.values() for c in cs)
            found = self._plans[key] = _ReadPlan(res, sets, numeric)
        return found

    def _state(self, plan: FeatureSetPlan, key: str, blob: bytes) -> dict[str, Any]:
        """The decoded state of a blob; evaluation only reads it, so it can be shared."""
        cache = self._decoded.setdefault(plan.id, {})
        hit = cache.get(key)
        if hit is not None and hit[0] == blob:
            return hit[1]
        state = plan.decode(blob, shared=True)
        if len(cache) >= self._cache_size:
            cache.pop(next(iter(cache)), None)  # the oldest entry goes
        cache[key] = (blob, state)
        self._added += 1
        if self.freeze_cached_states and self._added % 5_000 == 0:
            # Cached states live long and hold no cycles: keep them out of the collector's
            # full passes (a full pass over a warm cache took ~240 ms: a request's p99).
            gc.freeze()
            if not _UNFREEZE_AT_EXIT:
                _UNFREEZE_AT_EXIT.append(True)
                atexit.register(gc.unfreeze)  # so that shutdown still finalizes everything
        return state

    def get_with_presence(
        self,
        rows: Sequence[Mapping[str, Any]],
        features: Sequence[str],
        at_us: int | None = None,
    ) -> tuple[list[dict[str, Any]], list[bool]]:
        """``get``, plus for each row whether the store holds any state of its entity."""
        rows = self.entity_keys.rows(rows)
        out, by_entity = self.get_with_entities(rows, features, at_us)
        return out, any_known(by_entity, len(rows))

    def get_with_entities(
        self,
        rows: Sequence[Mapping[str, Any]],
        features: Sequence[str],
        at_us: int | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, list[bool]]]:
        """``get``, plus per entity of the features read (a user-item row reads user, item
        and pair features), for each row whether the store holds any state of it."""
        rows = self.entity_keys.rows(rows)
        rp = self._read_plan(features)
        known: dict[str, list[bool]] = {}
        t = self._clock() if at_us is None else at_us
        keys_of: dict[str, list[str]] = {}
        for plan, _ in rp.sets:
            names = plan.entity.keys
            if len(names) == 1:
                (name,) = names
                keys_of[plan.id] = [str(_key(row, name, i)) for i, row in enumerate(rows)]
            else:
                keys_of[plan.id] = [
                    entity_key([_key(row, k, i) for k in names]) for i, row in enumerate(rows)
                ]
        blobs_of = self._online.get_sets(
            {pid: list(dict.fromkeys(keys)) for pid, keys in keys_of.items()}
        )
        values: dict[str, list[Any]] = {}
        for plan, columns in rp.sets:
            keys = keys_of[plan.id]
            blobs = dict(zip(dict.fromkeys(keys), blobs_of[plan.id], strict=True))
            decoded = {
                k: plan.evaluate(self._state(plan, k, b) if b else None, columns, t)
                for k, b in blobs.items()
            }
            for column in columns:
                values[column.name] = [decoded[k][column.name] for k in keys]
            flags = known.setdefault(plan.entity.name, [False] * len(rows))
            for i, k in enumerate(keys):
                flags[i] = flags[i] or blobs[k] is not None
        res = rp.res
        if res.derived:
            inputs: dict[str, Any] = dict(values)
            for c in res.context:
                inputs[c] = [_key(row, c, i, "context field") for i, row in enumerate(rows)]
            for name, array in evaluate_derived(inputs, rp.numeric, res.derived).items():
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
