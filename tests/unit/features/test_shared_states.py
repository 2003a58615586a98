"""The online path's decoded states: tuples read like the processor's lists, and leave the
garbage collector's passes (a cache of them used to make full passes take tens of ms)."""

from __future__ import annotations

import gc
import random

from headwater.definitions.windows import MINUTE
from headwater.features.plan import plan_feature_sets
from tests.unit.features.test_consistency import FEATURES, SPAN, T0


def _state(plan, seed: int):  # type: ignore[no-untyped-def]
    rnd = random.Random(seed)
    state = plan.new_state()
    for off in range(300):
        row = {
            "x": None if rnd.random() < 0.1 else rnd.randrange(-40, 40) / 4,
            "n": None if rnd.random() < 0.1 else rnd.randrange(-5, 10),
            "cat": rnd.choice(["a", "b", "c", None]),
            "k": rnd.randrange(4),
        }
        plan.update(state, row, T0 + rnd.randrange(SPAN // MINUTE) * MINUTE, off)
    return state


def test_shared_states_evaluate_as_the_processors_do_and_are_not_tracked():
    (plan,) = plan_feature_sets(FEATURES)
    columns = plan.columns
    for seed in range(5):
        blob = plan.encode(_state(plan, seed))
        shared, own = plan.decode(blob, shared=True), plan.decode(blob)
        for t in range(T0, T0 + SPAN + 2 * 86_400_000_000, 3_600_000_000 * 7):
            assert plan.evaluate(shared, columns, t) == plan.evaluate(own, columns, t), t
    # without count_distinct (whose sets the collector must see), nothing of a shared state
    # stays in the collector's passes once it has looked at it
    (plain,) = plan_feature_sets([f for f in FEATURES if f.name != "cd"])
    state = plain.decode(plain.encode(_state(plain, 0)), shared=True)
    for _ in range(4):  # each pass untracks one more level of nesting (tile, last_k, entry)
        gc.collect()
    tiles = [tile for hop in state["h"].values() for tile in hop.values()]
    assert len(tiles) > 10 and not any(gc.is_tracked(tile) for tile in tiles)
    assert not any(gc.is_tracked(hop) for hop in state["h"].values())
    assert not gc.is_tracked(state["l"])
    owned = plain.decode(plain.encode(_state(plain, 0)))  # the processor's: lists to update
    gc.collect()
    assert all(gc.is_tracked(tile) for hop in owned["h"].values() for tile in hop.values())
