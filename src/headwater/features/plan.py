"""Feature sets: the features of one entity over one stream, laid out as tiles.

A feature set's state for one entity holds, per hop size, one tile per hop-aligned interval
(a list of partials, one per feature using that hop) and one lifetime tile. Windowed values
are the finalized merge of the tiles that fall in the window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from headwater.definitions import Entity, Feature, FeatureColumn, Stream
from headwater.definitions.base import content_hash
from headwater.definitions.windows import window_start
from headwater.features.algebra import Algebra, algebra_for

KEY_SEPARATOR = "\x1f"


def entity_key(values: Sequence[Any]) -> str:
    """The canonical string of an entity's key values: how tiles are addressed."""
    if len(values) == 1:
        return str(values[0])
    return KEY_SEPARATOR.join(str(v) for v in values)


@dataclass(frozen=True)
class Slot:
    """One feature's partial inside a tile."""

    feature: Feature
    algebra: Algebra
    kind: str
    field: str | None


def _slot(feature: Feature) -> Slot:
    agg = feature.aggregation
    return Slot(feature, algebra_for(agg.kind, agg.k), agg.kind, agg.field)


@dataclass
class FeatureSetPlan:
    """How one (entity, stream) pair's features are stored and evaluated."""

    entity: Entity
    stream: Stream
    features: list[Feature]
    id: str = ""
    hop_slots: dict[int, list[Slot]] = field(default_factory=dict)
    lifetime_slots: list[Slot] = field(default_factory=list)
    # per hop, the largest window using it: tiles older than its start are expired
    hop_retention: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.features.sort(key=lambda f: f.name)
        self.id = f"{self.entity.name}@{self.stream.name}#" + content_hash(
            [f.spec() for f in self.features]
        )
        for feature in self.features:
            for column in feature.columns:
                if column.hop_us is None:
                    if feature not in [s.feature for s in self.lifetime_slots]:
                        self.lifetime_slots.append(_slot(feature))
                    continue
                slots = self.hop_slots.setdefault(column.hop_us, [])
                if feature not in [s.feature for s in slots]:
                    slots.append(_slot(feature))
                assert column.window_us is not None
                self.hop_retention[column.hop_us] = max(
                    self.hop_retention.get(column.hop_us, 0), column.window_us
                )
        self._slot_index = {
            (hop, s.feature.name): i
            for hop, slots in self.hop_slots.items()
            for i, s in enumerate(slots)
        }
        self._lifetime_index = {s.feature.name: i for i, s in enumerate(self.lifetime_slots)}
        self._evaluators: dict[str, tuple[int | None, int, int, Any]] = {}
        self._empty = self.new_state()  # what evaluating an unknown entity reads
        # Precompiled update programs: the hot loop of the processor reads only these.
        position = {f.name: i for i, f in enumerate(self.features)}
        self._inputs = [(f.where, f.aggregation.field) for f in self.features]
        self._hop_programs = [
            (
                hop,
                [(i, position[s.feature.name], s.algebra.update) for i, s in enumerate(slots)],
                [s.algebra.init for s in slots],
            )
            for hop, slots in self.hop_slots.items()
        ]
        self._lifetime_program = [
            (i, position[s.feature.name], s.algebra.update)
            for i, s in enumerate(self.lifetime_slots)
        ]
        self._update_many = self._compile_update_many()
        # which partials are count_distinct sets (stored as arrays), per hop and lifetime
        self._distinct_hops = [
            (hop, distinct)
            for hop, slots in self.hop_slots.items()
            if (distinct := {i for i, s in enumerate(slots) if s.kind == "count_distinct"})
        ]
        self._distinct_lifetime = {
            i for i, s in enumerate(self.lifetime_slots) if s.kind == "count_distinct"
        }

    @property
    def columns(self) -> list[FeatureColumn]:
        return [c for f in self.features for c in f.columns]

    # -- state ---------------------------------------------------------------------------

    def new_state(self) -> dict[str, Any]:
        return {"h": {hop: {} for hop in self.hop_slots}, "l": self._fresh(self.lifetime_slots)}

    @staticmethod
    def _fresh(slots: list[Slot]) -> list[Any]:
        return [s.algebra.init() for s in slots]

    def update(self, state: dict[str, Any], row: Mapping[str, Any], ts: int, off: int) -> None:
        """Apply one event to an entity's state (filters and nulls decided here)."""
        # One value per feature, None when the filter rejects the event or the field is null.
        values = [
            None
            if where is not None and where.evaluate(row) is not True
            else (row.get(field) if field else True)
            for where, field in self._inputs
        ]
        if not any(v is not None for v in values):
            return
        hops = state["h"]
        for hop, program, inits in self._hop_programs:
            tiles = hops[hop]
            start = ts - ts % hop  # floor to the hop, also for times before 1970
            tile = tiles.get(start)
            if tile is None:
                tile = tiles[start] = [init() for init in inits]
            for i, feature, update in program:
                value = values[feature]
                if value is not None:
                    tile[i] = update(tile[i], value, ts, off)
        tile = state["l"]
        for i, feature, update in self._lifetime_program:
            value = values[feature]
            if value is not None:
                tile[i] = update(tile[i], value, ts, off)

    def update_many(
        self,
        states: Mapping[str, dict[str, Any]],
        keys: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        offsets: Sequence[int],
    ) -> None:
        """Apply events in order: the i-th (``rows[i]`` at log offset ``offsets[i]``) to the
        state of ``keys[i]`` in ``states``; exactly ``update`` once per event, in one loop
        compiled for this feature set."""
        self._update_many(states, keys, rows, offsets)

    def _compile_update_many(self) -> Any:
        """``update_many`` as Python source written for this feature set, so the processor's
        loop does per event only what its features need: no call per event, no list of
        values, no filter where there is none, and counts and sums added in place. Other
        aggregations call their algebra's ``update``, as ``update`` does."""
        env: dict[str, Any] = {}
        lines = ["def update_many(states, keys, rows, offsets):"]
        lines.append("    for key, row, off in zip(keys, rows, offsets, strict=True):")
        lines.append(f"        ts = row[{self.stream.time!r}]")
        maybe_none = []
        for j, (where, fld) in enumerate(self._inputs):
            value = f"row.get({fld!r})" if fld else "True"
            if where is not None:
                env[f"W{j}"] = where.evaluate
                value = f"({value} if W{j}(row) is True else None)"
            if value != "True":
                maybe_none.append(j)
            lines.append(f"        v{j} = {value}")
        if len(maybe_none) == len(self._inputs):  # else some value is always there
            none = " and ".join(f"v{j} is None" for j in maybe_none)
            lines.append(f"        if {none}:")
            lines.append("            continue")
        lines.append("        state = states[key]")
        if self._hop_programs:
            lines.append("        hops = state['h']")
        for h, (hop, program, inits) in enumerate(self._hop_programs):
            lines.append(f"        tiles = hops[{hop}]")
            lines.append(f"        start = ts - ts % {hop}")
            lines.append("        tile = tiles.get(start)")
            lines.append("        if tile is None:")
            fresh = []
            for i, init in enumerate(inits):
                if self.hop_slots[hop][i].kind in ("count", "sum"):
                    fresh.append(repr(init()))  # an immutable 0: no call per new tile
                else:
                    env[f"I{h}_{i}"] = init
                    fresh.append(f"I{h}_{i}()")
            lines.append(f"            tile = tiles[start] = [{', '.join(fresh)}]")
            kinds = self.hop_slots[hop]
            for i, feature, update in program:
                env[f"U{h}_{i}"] = update
                lines += _slot_update(i, feature, kinds[i].kind, f"U{h}_{i}", maybe_none)
        if self._lifetime_program:
            lines.append("        tile = state['l']")
        for i, feature, update in self._lifetime_program:
            env[f"L{i}"] = update
            kind = self.lifetime_slots[i].kind
            lines += _slot_update(i, feature, kind, f"L{i}", maybe_none)
        exec(compile("\n".join(lines), f"<update_many of {self.id}>", "exec"), env)
        return env["update_many"]

    def expire(self, state: dict[str, Any], now_us: int) -> None:
        """Drop tiles that no window evaluated at or after ``now_us`` can reach."""
        _drop_older(state["h"], self._oldest_tiles(now_us))

    def _oldest_tiles(self, now_us: int) -> list[tuple[int, int]]:
        """Per hop, the start of the oldest tile a window evaluated at ``now_us`` reads."""
        return [(hop, window_start(now_us, w, hop)) for hop, w in self.hop_retention.items()]

    def evaluate(
        self, state: dict[str, Any] | None, columns: Iterable[FeatureColumn], t_us: int
    ) -> dict[str, Any]:
        """The value of each column at time t from an entity's tiles (None: no state).

        Reads ``state`` without changing it (the online path shares decoded states)."""
        if state is None:
            state = self._empty
        hops, lifetime = state["h"], state["l"]
        programs = self._evaluators
        out: dict[str, Any] = {}
        for column in columns:
            program = programs.get(column.name)
            if program is None:
                program = programs[column.name] = self._evaluator(column)
            hop, i, window, algebra = program
            if hop is None:
                out[column.name] = algebra.finalize(lifetime[i])
                continue
            start = ((t_us - window) // hop) * hop  # window_start, inlined: the hot path
            acc = algebra.init()
            merge = algebra.merge
            for tile_start, tile in hops.get(hop, {}).items():
                if start <= tile_start < t_us:
                    acc = merge(acc, tile[i])
            out[column.name] = algebra.finalize(acc)
        return out

    def valid_until(
        self, state: dict[str, Any], columns: Iterable[FeatureColumn], t_us: int
    ) -> int | float:
        """The first time after ``t_us`` at which ``evaluate`` of the same state and columns
        can answer otherwise: a window's start crosses a tile boundary, or a tile that
        starts at or after ``t_us`` enters the window (``inf``: lifetime columns only).
        Between the two the answer is the same, so a cache of evaluated values is exact."""
        hops = state["h"]
        until: int | float = math.inf
        for column in columns:
            hop, _, window, _ = self._program(column)
            if hop is None:
                continue
            until = min(until, ((t_us - window) // hop + 1) * hop + window)
            later = [start for start in hops.get(hop, {}) if start >= t_us]
            if later:
                until = min(until, min(later) + 1)
        return until

    def _program(self, column: FeatureColumn) -> tuple[int | None, int, int, Any]:
        program = self._evaluators.get(column.name)
        if program is None:
            program = self._evaluators[column.name] = self._evaluator(column)
        return program

    def _evaluator(self, column: FeatureColumn) -> tuple[int | None, int, int, Any]:
        name = column.feature.name
        if column.hop_us is None:
            i = self._lifetime_index[name]
            return None, i, 0, self.lifetime_slots[i].algebra
        assert column.window_us is not None
        i = self._slot_index[(column.hop_us, name)]
        return column.hop_us, i, column.window_us, self.hop_slots[column.hop_us][i].algebra

    # -- encoding --------------------------------------------------------------------------

    def encode(self, state: dict[str, Any]) -> bytes:
        return msgpack.packb(state, default=_encode_set, strict_types=False)

    def encode_many(self, states: Mapping[str, dict[str, Any]], now_us: int) -> dict[str, bytes]:
        """Each state expired at ``now_us`` (see ``expire``; changed in place) and encoded."""
        oldest = self._oldest_tiles(now_us)
        pack = msgpack.Packer(default=_encode_set, strict_types=False).pack  # one a batch
        out = {}
        for key, state in states.items():
            _drop_older(state["h"], oldest)
            out[key] = pack(state)
        return out

    def decode(self, blob: bytes | None, shared: bool = False) -> dict[str, Any]:
        """The state a blob holds: lists to update (the processor), or with ``shared``
        tuples only to read (the online path keeps decoded states in a cache: tuples of
        plain values leave the garbage collector's passes, so a large cache does not make
        its full passes take tens of milliseconds)."""
        if blob is None:
            return self.new_state()
        state = msgpack.unpackb(blob, strict_map_key=False, use_list=not shared)
        hops = state["h"]
        if len(hops) != len(self.hop_slots):  # every state is stored with every hop; if not
            for hop in self.hop_slots:
                hops.setdefault(hop, {})
        for hop, distinct in self._distinct_hops:
            tiles = hops[hop]
            for start, tile in tiles.items():
                tiles[start] = _with_sets(tile, distinct, shared)
        if self._distinct_lifetime:
            state["l"] = _with_sets(state["l"], self._distinct_lifetime, shared)
        return state


def _drop_older(hops: dict[int, dict[int, Any]], oldest: list[tuple[int, int]]) -> None:
    """Drop each hop's tiles that start before its oldest."""
    for hop, first in oldest:
        tiles = hops[hop]
        if tiles and min(tiles) < first:  # the common case, a check in C: none to drop
            for start in [s for s in tiles if s < first]:
                del tiles[start]


def _slot_update(i: int, feature: int, kind: str, update: str, maybe_none: list[int]) -> list[str]:
    """The lines of ``update_many`` applying value ``v<feature>`` to partial ``i`` of
    ``tile``: in place for counts and sums (the same ``+ 1`` and ``+ value`` as their
    algebra's update), a call of the algebra's ``update`` otherwise; skipped where the value
    is None."""
    if kind == "count":
        step = f"tile[{i}] += 1"
    elif kind == "sum":
        step = f"tile[{i}] += v{feature}"
    else:
        step = f"tile[{i}] = {update}(tile[{i}], v{feature}, ts, off)"
    if feature not in maybe_none:
        return [f"        {step}"]
    return [f"        if v{feature} is not None:", f"            {step}"]


def _with_sets(partials: Any, distinct: set[int], shared: bool) -> Any:
    """The partials with those of ``count_distinct`` as sets (they are stored as arrays)."""
    out = [set(v) if i in distinct else v for i, v in enumerate(partials)]
    return tuple(out) if shared else out


def _encode_set(value: Any) -> Any:
    # Sorted: a set's order depends on how it was built (the processor keeps states between
    # batches), and the same state must encode to the same bytes however it was built.
    if isinstance(value, set):
        try:
            return sorted(value)
        except TypeError:  # values of one field are of one type; mixed ones are not ordered
            return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} in a tile")


def plan_feature_sets(features: Iterable[Feature]) -> list[FeatureSetPlan]:
    """Group features by (entity, stream): each group is computed in one pass."""
    groups: dict[tuple[str, str], list[Feature]] = {}
    for feature in features:
        groups.setdefault((feature.entity.name, feature.stream.name), []).append(feature)
    plans = []
    for group in groups.values():
        plans.append(FeatureSetPlan(group[0].entity, group[0].stream, list(group)))
    return plans
