"""Definitions refuse what is incomplete or inconsistent, with messages that say what to do."""

from __future__ import annotations

import pytest

from headwater import DefinitionError, Derived, Entity, Feature, Stream, agg, col
from headwater.definitions.windows import DAY, HOUR, MINUTE, default_hop, window_start

user = Entity("user", keys="user_id", owner="growth", description="A shopper")


def _stream(**over):
    args = dict(
        fields={"user_id": "string", "amount": "float", "status": "string"},
        key="user_id",
        time="ts",
        owner="payments",
        description="Orders",
    )
    args.update(over)
    return Stream("orders", **args)


def test_owner_and_description_are_required():
    with pytest.raises(DefinitionError, match="has no owner and no description"):
        Entity("user", keys="user_id")
    with pytest.raises(DefinitionError, match="has no description"):
        _stream(description="")
    with pytest.raises(DefinitionError, match="stream 'orders' has no owner"):
        _stream(owner=None)
    with pytest.raises(DefinitionError, match="feature 'spend' has no owner"):
        Feature(
            "spend", entity=user, stream=_stream(), aggregation=agg.sum("amount"), description="x"
        )


def test_unknown_fields_get_suggestions():
    with pytest.raises(DefinitionError, match="did you mean 'amount'"):
        Feature(
            "spend",
            entity=user,
            stream=_stream(),
            aggregation=agg.sum("amout"),
            owner="o",
            description="d",
        )
    with pytest.raises(DefinitionError, match="key field 'user'"):
        _stream(key="user")
    with pytest.raises(DefinitionError, match="did you mean 'status'"):
        Feature(
            "paid",
            entity=user,
            stream=_stream(),
            aggregation=agg.count(),
            where=col("statu") == "paid",
            owner="o",
            description="d",
        )


def test_numeric_aggregations_need_numeric_fields():
    with pytest.raises(DefinitionError, match="sum needs a numeric field"):
        Feature(
            "s",
            entity=user,
            stream=_stream(),
            aggregation=agg.sum("status"),
            owner="o",
            description="d",
        )


def test_bad_names_types_and_windows():
    with pytest.raises(DefinitionError, match="not valid"):
        Entity("User Name", keys="k", owner="o", description="d")
    with pytest.raises(DefinitionError, match="unknown field type 'money'"):
        _stream(fields={"user_id": "string", "amount": "money"})
    with pytest.raises(DefinitionError, match="cannot read '7 days'"):
        Feature(
            "s",
            entity=user,
            stream=_stream(),
            aggregation=agg.count(),
            windows=["7 days"],
            owner="o",
            description="d",
        )
    with pytest.raises(DefinitionError, match="last_k needs k"):
        agg.last_k("amount", 0)


def test_window_names_and_hops_follow_chronon():
    f = Feature(
        "n",
        entity=user,
        stream=_stream(),
        aggregation=agg.count(),
        windows=["30m", "12h", "7d", "12d", "lifetime"],
        owner="o",
        description="d",
    )
    assert [(c.name, c.hop_us) for c in f.columns] == [
        ("n_30m", 5 * MINUTE),
        ("n_12h", HOUR),
        ("n_7d", HOUR),
        ("n_12d", DAY),
        ("n_lifetime", None),
    ]
    assert default_hop(12 * HOUR - 1) == 5 * MINUTE
    assert window_start(10 * HOUR + 7 * MINUTE, HOUR, 5 * MINUTE) == 9 * HOUR + 5 * MINUTE
    assert window_start(-1, HOUR, HOUR) == -2 * HOUR  # floor, not truncation


def test_versions_change_with_meaning_not_with_metadata():
    base = Feature(
        "n",
        entity=user,
        stream=_stream(),
        aggregation=agg.count(),
        windows=["1d"],
        owner="o",
        description="d",
    )
    relabelled = Feature(
        "n",
        entity=user,
        stream=_stream(),
        aggregation=agg.count(),
        windows=["1d"],
        owner="other",
        description="new words",
    )
    refiltered = Feature(
        "n",
        entity=user,
        stream=_stream(),
        aggregation=agg.count(),
        windows=["1d"],
        where=col("status") == "paid",
        owner="o",
        description="d",
    )
    assert base.version == relabelled.version
    assert base.version != refiltered.version


def test_filters_use_sql_null_logic():
    f = (col("a") == 1) | ~(col("b") > 2)
    assert f.evaluate({"a": None, "b": None}) is None
    assert f.evaluate({"a": None, "b": 1}) is True
    assert f.evaluate({"a": 2, "b": 3}) is False
    assert col("a").is_null().evaluate({}) is True
    with pytest.raises(DefinitionError, match="is_null"):
        col("a") == None  # noqa: B015, E711


def test_derived_needs_inputs():
    with pytest.raises(DefinitionError, match="needs inputs"):
        Derived("d", inputs=[], fn=lambda df: df, owner="o", description="d")


def test_a_bandit_policy_or_epsilon_out_of_range_is_refused_with_the_choices():
    from headwater.definitions.service import Bandit

    rewards = _stream()
    assert Bandit(rewards, policy="epsilon", epsilon=0.2).policy == "epsilon"
    with pytest.raises(DefinitionError, match="'epsilon_greedy' is not one of thompson, epsilon"):
        Bandit(rewards, policy="epsilon_greedy")
    with pytest.raises(DefinitionError, match=r"epsilon must be in \[0, 1\]"):
        Bandit(rewards, epsilon=1.5)
