"""Tests of the shop simulator: determinism, event validity, hidden churn and drift."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import headwater.examples.shop.simulator as simulator_module
from headwater import Project
from headwater.examples.shop.simulator import Simulation, simulate

END = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0
SHOP = Path(simulator_module.__file__).parent
STREAMS = {
    "signups",
    "sessions",
    "page_views",
    "cart_events",
    "purchases",
    "refunds",
    "support_tickets",
}


@pytest.fixture(scope="module")
def small() -> Simulation:
    return simulate(users=200, days=14, end=END, seed=3)


@pytest.fixture(scope="module")
def mid() -> Simulation:
    return simulate(users=1500, days=28, end=END, seed=11)


def _failed_rate(purchases: list[dict]) -> float:
    assert purchases
    return sum(p["status"] == "failed" for p in purchases) / len(purchases)


def test_same_arguments_give_identical_output(small: Simulation) -> None:
    again = simulate(users=200, days=14, end=END, seed=3)
    assert again.events == small.events
    assert again.churn_times == small.churn_times
    assert again.users == small.users


def test_a_different_seed_gives_different_output(small: Simulation) -> None:
    other = simulate(users=200, days=14, end=END, seed=4)
    assert other.events["page_views"] != small.events["page_views"]
    assert other.counts() != small.counts()


def test_every_stream_has_events_and_counts_match(small: Simulation) -> None:
    assert set(small.events) == STREAMS
    counts = small.counts()
    assert counts == {name: len(events) for name, events in small.events.items()}
    assert all(counts[name] > 0 for name in STREAMS), counts
    assert counts["signups"] == len(small.users) == 200
    assert len(set(small.users)) == len(small.users)


def test_events_fall_in_the_window_sorted_with_unique_ids(small: Simulation) -> None:
    start = END - 14 * DAY
    for name, events in small.events.items():
        times = [e["ts"] for e in events]
        assert all(isinstance(t, float) for t in times), name
        assert times == sorted(times), name
        assert start <= times[0] and times[-1] < END, name
        ids = [e["event_id"] for e in events]
        assert len(set(ids)) == len(ids), name
        assert all(isinstance(i, str) and i for i in ids), name


def test_field_values_are_plausible(small: Simulation) -> None:
    for e in small.events["page_views"]:
        assert e["page"] in {"home", "search", "product", "cart", "checkout"}
        assert (e["item_id"] is not None) == (e["page"] == "product")
    for e in small.events["purchases"]:
        assert e["status"] in {"paid", "failed"}
        assert isinstance(e["amount"], float) and e["amount"] > 0
        assert isinstance(e["items"], int) and e["items"] >= 1
    for e in small.events["cart_events"]:
        assert e["action"] in {"add", "remove"}
        assert isinstance(e["quantity"], int) and e["quantity"] >= 1
        assert isinstance(e["price"], float) and e["price"] > 0
    for e in small.events["support_tickets"]:
        assert isinstance(e["severity"], int) and 1 <= e["severity"] <= 3
    paid = {p["order_id"]: p for p in small.events["purchases"] if p["status"] == "paid"}
    for r in small.events["refunds"]:
        order = paid[r["order_id"]]
        assert order["user_id"] == r["user_id"]
        assert order["ts"] < r["ts"] and 0 < r["amount"] <= order["amount"]


def test_no_events_before_signup_or_after_churn(small: Simulation) -> None:
    signed_up = {e["user_id"]: e["ts"] for e in small.events["signups"]}
    for name, events in small.events.items():
        for e in events:
            assert e["ts"] >= signed_up[e["user_id"]], name
            churned = small.churn_times.get(e["user_id"])
            assert churned is None or e["ts"] < churned, name
    assert set(small.churn_times) <= set(small.users)


def test_every_event_fits_its_stream(small: Simulation, tmp_path: Path) -> None:
    for name in ("definitions.py", "headwater.toml"):
        shutil.copy(SHOP / name, tmp_path / name)
    project = Project(tmp_path, clock=lambda: int(END * 1e6))
    assert set(project.definitions.streams) == set(small.events)
    for stream, events in small.events.items():
        result = project.ingest(stream, events)
        assert result.rejected == [], (stream, result.rejected[:3])
        assert result.accepted == len(events), stream


def test_bad_experiences_raise_churn(mid: Simulation) -> None:
    hurt = {p["user_id"] for p in mid.events["purchases"] if p["status"] == "failed"}
    hurt |= {t["user_id"] for t in mid.events["support_tickets"]}
    hurt_users = [u for u in mid.users if u in hurt]
    fine_users = [u for u in mid.users if u not in hurt]
    assert len(hurt_users) >= 100 and len(fine_users) >= 100
    rate_hurt = sum(u in mid.churn_times for u in hurt_users) / len(hurt_users)
    rate_fine = sum(u in mid.churn_times for u in fine_users) / len(fine_users)
    assert 0.0 < rate_fine < rate_hurt
    assert rate_hurt > 1.5 * rate_fine


def test_churned_users_stop_and_churn_is_partial(mid: Simulation) -> None:
    share = len(mid.churn_times) / len(mid.users)
    assert 0.03 < share < 0.5
    last_seen: dict[str, float] = {}
    for e in mid.events["sessions"]:
        last_seen[e["user_id"]] = e["ts"]
    for user, when in mid.churn_times.items():
        assert END - 28 * DAY <= when < END
        assert last_seen.get(user, when - 1) < when


def test_drift_raises_failed_payments_in_the_last_third(mid: Simulation) -> None:
    cut = END - 28 * DAY / 3
    drifted = simulate(users=1500, days=28, end=END, seed=11, drift=0.6)
    late_base = [p for p in mid.events["purchases"] if p["ts"] >= cut]
    late_drifted = [p for p in drifted.events["purchases"] if p["ts"] >= cut]
    assert _failed_rate(late_drifted) > _failed_rate(late_base) + 0.04
    early_base = [p for p in mid.events["purchases"] if p["ts"] < cut]
    early_drifted = [p for p in drifted.events["purchases"] if p["ts"] < cut]
    assert abs(_failed_rate(early_drifted) - _failed_rate(early_base)) < 0.03
    assert len(drifted.events["sessions"]) < len(mid.events["sessions"])


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        simulate(users=10, days=7, end=END, drift=1.5)
    with pytest.raises(ValueError):
        simulate(users=10, days=0, end=END)
