"""Online feature values: evaluated at "now" from the tiles in the online store."""

from __future__ import annotations

import atexit
import contextlib
import gc
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
    """What reading one list of features needs, worked out once per list and reused: per
    feature set its plan, the columns read and their names (the evaluation cache's key)."""

    res: Resolution
    sets: list[tuple[FeatureSetPlan, list[FeatureColumn], tuple[str, ...]]]
    numeric: set[str]
    # the distinct entities' key fields, and for each set the index of its entity's
    key_fields: list[tuple[str, ...]]
    slots: list[int]
    # one request's answer by its entities' keys (in ``key_fields`` order)
    rows: dict[tuple[str, ...], _Row] = field(default_factory=dict)


@dataclass
class _Row:
    """A whole answer for one entity (base and, without context fields, derived values):
    valid while every set's stored bytes are ``blobs`` and the time is in [since, until).
    ``mark``: the store's change mark taken before those bytes were read (or last found
    equal to them); while the store answers the same mark, they have not changed."""

    blobs: tuple[bytes | None, ...]
    since: int
    until: int | float
    values: dict[str, Any]
    known: dict[str, bool]
    mark: object | None = None


class _Cached:
    """One entity's stored bytes in one feature set, their decoded state and the values
    evaluated from it: by column names, (from, until, values) valid for any time in
    [from, until) (``FeatureSetPlan.valid_until``)."""

    __slots__ = ("blob", "state", "values")

    def __init__(self, blob: bytes, state: dict[str, Any]) -> None:
        self.blob, self.state = blob, state
        self.values: dict[tuple[str, ...], tuple[int, int | float, dict[str, Any]]] = {}


class OnlineFeatures:
    """Reads feature values for entities from the online store.

    The serving hot path: one store round trip for every feature set of a request, the
    resolution of a feature list worked out once, and per entity (``cache_size`` per
    feature set) its decoded state and evaluated values, kept while the bytes read in the
    request's own round trip are the ones they came from. Evaluated values are reused only
    at times where evaluating again cannot answer otherwise, so the cache never changes an
    answer: the consistency property test reads through it.
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
        self._decoded: dict[str, dict[str, _Cached]] = {}
        self._empty: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
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
            sets = [
                (self._catalog.plan(pid), cols, tuple(c.name for c in cols))
                for pid, cols in res.columns.items()
            ]
            numeric = numeric_names(c for cs in res.columns.values() for c in cs)
            fields = list(dict.fromkeys(tuple(plan.entity.keys) for plan, _, _ in sets))
            slots = [fields.index(tuple(plan.entity.keys)) for plan, _, _ in sets]
            found = self._plans[key] = _ReadPlan(res, sets, numeric, fields, slots)
        return found

    def _evaluate(
        self,
        plan: FeatureSetPlan,
        columns: list[FeatureColumn],
        names: tuple[str, ...],
        key: str,
        blob: bytes | None,
        t: int,
    ) -> tuple[dict[str, Any], int | float]:
        """``plan.evaluate`` of the entity's stored ``blob`` at ``t`` through the cache, and
        until when that answer holds. The answer is shared with the cache: callers only
        read it."""
        if blob is None:  # no state: the same values at any time
            empty = self._empty.get((plan.id, names))
            if empty is None:
                empty = self._empty[(plan.id, names)] = plan.evaluate(None, columns, t)
            return empty, math.inf
        cache = self._decoded.setdefault(plan.id, {})
        hit = cache.get(key)
        if hit is None or hit.blob != blob:
            hit = self._remember(cache, key, blob, plan.decode(blob, shared=True))
        done = hit.values.get(names)
        if done is not None and done[0] <= t < done[1]:
            return done[2], done[1]
        values = plan.evaluate(hit.state, columns, t)
        until = plan.valid_until(hit.state, columns, t)
        hit.values[names] = (t, until, values)
        return values, until

    def _remember(
        self, cache: dict[str, _Cached], key: str, blob: bytes, state: dict[str, Any]
    ) -> _Cached:
        if len(cache) >= self._cache_size:
            _evict_oldest(cache)
        entry = cache[key] = _Cached(blob, state)
        self._added += 1
        if self.freeze_cached_states and self._added % 5_000 == 0:
            # Cached states live long and hold no cycles: keep them out of the collector's
            # full passes (a full pass over a warm cache took ~240 ms: a request's p99).
            gc.freeze()
            if not _UNFREEZE_AT_EXIT:
                _UNFREEZE_AT_EXIT.append(True)
                atexit.register(gc.unfreeze)  # so that shutdown still finalizes everything
        return entry

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
        t = self._clock() if at_us is None else at_us
        if len(rows) == 1:
            return self._one(rows[0], rp, t)
        known: dict[str, list[bool]] = {}
        keys_of: dict[str, list[str]] = {}
        for plan, _, _ in rp.sets:
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
        for plan, columns, names in rp.sets:
            keys = keys_of[plan.id]
            blobs = dict(zip(dict.fromkeys(keys), blobs_of[plan.id], strict=True))
            decoded = {
                k: self._evaluate(plan, columns, names, k, b or None, t)[0]
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

    def _one(
        self, row: Mapping[str, Any], rp: _ReadPlan, t: int
    ) -> tuple[list[dict[str, Any]], dict[str, list[bool]]]:
        """``get_with_entities`` of one row (a request for one entity: the serving path's
        common case), without the per-row lists; the same values (a test compares).

        The whole answer is kept per entity and reused while ``t`` is in its time range
        and the bytes read now are the ones it came from, or, without reading them, while
        the store's change mark is the one taken before they were last read (nothing was
        written since); derived features that read request context are evaluated anew
        each time."""
        keys = tuple(
            str(_key(row, names[0], 0))
            if len(names) == 1
            else entity_key([_key(row, k, 0) for k in names])
            for names in rp.key_fields
        )
        res = rp.res
        hit = rp.rows.get(keys)
        if hit is not None and not hit.since <= t < hit.until:
            hit = None
        # taken before the read: a change after it shows as another mark next time
        mark = self._online.change_mark()
        if hit is None or mark is None or hit.mark != mark:
            wanted = {plan.id: [keys[i]] for (plan, _, _), i in zip(rp.sets, rp.slots, strict=True)}
            found = self._online.get_sets(wanted)
            blobs = tuple(found[plan.id][0] or None for plan, _, _ in rp.sets)
            if hit is not None and hit.blobs == blobs:
                hit.mark = mark  # the bytes it came from are still the stored ones
            else:
                hit = self._evaluate_row(row, rp, keys, blobs, t, mark)
        values = hit.values  # shared with the cache: only read here
        if res.derived and res.context:
            values = {**values, **self._derived_one(row, rp, values)}
        out = {name: values[name] for name in res.requested}
        return [out], {entity: [flag] for entity, flag in hit.known.items()}

    def _evaluate_row(
        self,
        row: Mapping[str, Any],
        rp: _ReadPlan,
        keys: tuple[str, ...],
        blobs: tuple[bytes | None, ...],
        t: int,
        mark: object | None,
    ) -> _Row:
        """One entity's answer from the bytes of each of its sets, kept in the cache."""
        values: dict[str, Any] = {}
        until: int | float = math.inf
        known: dict[str, bool] = {}
        for (plan, columns, names), i, blob in zip(rp.sets, rp.slots, blobs, strict=True):
            got, good_until = self._evaluate(plan, columns, names, keys[i], blob, t)
            values.update(got)
            until = min(until, good_until)
            entity = plan.entity.name
            known[entity] = known.get(entity, False) or blob is not None
        if rp.res.derived and not rp.res.context:
            values.update(self._derived_one(row, rp, values))
        if len(rp.rows) >= self._cache_size:
            _evict_oldest(rp.rows)
        answer = rp.rows[keys] = _Row(blobs, t, until, values, known, mark)
        return answer

    def _derived_one(
        self, row: Mapping[str, Any], rp: _ReadPlan, values: dict[str, Any]
    ) -> dict[str, Any]:
        inputs: dict[str, Any] = {name: [value] for name, value in values.items()}
        for c in rp.res.context:
            inputs[c] = [_key(row, c, 0, "context field")]
        derived = evaluate_derived(inputs, rp.numeric, rp.res.derived)
        return {name: to_python(array.tolist()[0]) for name, array in derived.items()}


def _evict_oldest(cache: dict[Any, Any]) -> None:
    """Drop a full cache's oldest entry. Requests of many entities run on other threads:
    one of them may change the dict between finding the oldest key and dropping it, which
    is fine (the cache stays about its size), but must never fail the request."""
    with contextlib.suppress(RuntimeError, StopIteration):  # changed meanwhile
        cache.pop(next(iter(cache)), None)


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
