"""Mock values and mock events: realistic fakes stable per pseudonym where people look at data
(sample, describe), marked as mock; generated events valid for their stream, drawn as
observed in another environment, with nothing of a real person."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from typer.testing import CliRunner

from headwater import DefinitionError, Project
from headwater.cli import app
from headwater.definitions.types import to_micros
from headwater.privacy.mock import mock_events, mock_value, provider_for
from tests.conftest import write_project

NOW = datetime(2026, 3, 1, tzinfo=UTC)
DEFINITIONS = """
from headwater import Stream

orders = Stream(
    "orders",
    fields={"user_id": "string", "email": "string", "phone": "string", "amount": "float",
            "items": "int", "channel": "string", "country": "string", "gift": "bool",
            "ts": "timestamp"},
    key="user_id", time="ts", required=["amount"], owner="shop", description="Orders",
    pii={"email": "pseudonymize", "phone": "drop"},
)
"""
CONFIG = "[environments.production]\n[environments.dev]\n"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    folder = write_project(tmp_path_factory.mktemp("mock") / "shop", DEFINITIONS)
    (folder / "headwater.toml").write_text((folder / "headwater.toml").read_text() + CONFIG)
    import random

    rnd = random.Random(5)
    events = []
    for _ in range(3000):
        user = f"u{rnd.randrange(200)}"
        events.append(
            {
                "user_id": user,
                "email": f"{user}@mail.example",
                "phone": "+44 20 7946 0000",
                "amount": round(rnd.expovariate(1 / 40), 2),
                "items": rnd.randint(1, 5),
                "channel": rnd.choices(["web", "ios", "android"], [6, 3, 1])[0],
                "country": rnd.choice(["FR", "DE"]),
                "gift": rnd.random() < 0.2,
                "ts": NOW - timedelta(minutes=rnd.randrange(60 * 24 * 20)),
            }
        )
    with Project(folder, env="production", clock=lambda: NOW) as production:
        assert not production.ingest("orders", events).rejected
        yield folder, production, events


def test_a_mock_value_is_realistic_stable_per_pseudonym_and_says_nothing_of_it():
    email = mock_value("email", "pii_00aa")
    assert email == mock_value("email", "pii_00aa") != mock_value("email", "pii_00ab")
    assert re.fullmatch(r"[^@\s]+@example\.(com|org|net)", email)  # never a real address
    assert "pii_" not in email and "00aa" not in email
    assert re.search(r"\d{3}", mock_value("phone", "pii_1"))
    assert len(mock_value("customer_name", "pii_1").split()) >= 2
    assert [provider_for(f) for f in ("ip_address", "date_of_birth", "iban", "comment")] == [
        "ipv4",
        "date_of_birth",
        "iban",
        "bothify",
    ]


def test_sample_and_describe_show_mock_values_marked_as_such(shop):
    folder, production, events = shop
    latest = production.sample_events("orders", 5)
    stored = production.sample_events("orders", 5, mock=False)
    assert [e["_event_id"] for e in latest] == [e["_event_id"] for e in stored]
    for shown, raw in zip(latest, stored, strict=True):
        assert shown["_mock"] == ["email"] and "phone" not in shown  # dropped at ingest
        assert raw["email"].startswith("pii_")
        assert shown["email"] == mock_value("email", raw["email"])
        assert shown["amount"] == raw["amount"]
    runner = CliRunner()
    out = runner.invoke(
        app, ["sample", "orders", "-n", "3", "-p", str(folder), "--env", "production"]
    )
    assert out.exit_code == 0, out.output
    assert "(mock)" in out.output and "pii_" not in out.output and "mail.example" not in out.output
    as_json = runner.invoke(
        app, ["sample", "orders", "-n", "2", "--json", "-p", str(folder), "-e", "production"]
    )
    lines = [orjson.loads(line) for line in as_json.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 2 and all(line["_mock"] == ["email"] for line in lines)
    described = runner.invoke(app, ["describe", "orders", "-p", str(folder), "-e", "production"])
    assert described.exit_code == 0, described.output
    assert "(mock)" in described.output and "pii_" not in described.output
    assert "mail.example" not in described.output


def test_mock_events_are_valid_and_stable_without_any_data(shop):
    folder, _, _ = shop
    with Project(folder, env="dev", clock=lambda: NOW) as dev:
        events = dev.mock_events("orders", 500, days=7, seed=3)
        assert events == dev.mock_events("orders", 500, days=7, seed=3)
        assert events != dev.mock_events("orders", 500, days=7, seed=4)
        result = dev.ingest("orders", events)
        assert result.accepted == 500 and not result.rejected
        assert dev.ingest("orders", events).duplicates == 500  # the same ids: nothing twice
    assert all(re.fullmatch(r"mock-\d{6}", e["user_id"]) for e in events)
    assert {e["event_id"] for e in events} == {f"mock-3-{i}" for i in range(500)}
    times = [to_micros(e["ts"]) for e in events]
    assert times == sorted(times) and to_micros(NOW - timedelta(days=7)) <= times[0]
    assert times[-1] < to_micros(NOW)
    by_user: dict[str, set[str]] = {}
    for e in events:
        by_user.setdefault(e["user_id"], set()).add(e["email"])
    assert all(len(emails) == 1 for emails in by_user.values())  # one fake per entity
    assert all(e["email"].endswith((".com", ".org", ".net")) for e in events)


def test_mock_events_draw_values_as_observed_in_another_environment(shop):
    folder, production, real = shop
    with Project(folder, env="dev", clock=lambda: NOW) as dev:
        events = dev.mock_events("orders", 3000, like=production, seed=1)
    channels = Counter(e["channel"] for e in events)
    assert set(channels) <= {"web", "ios", "android"}
    assert 0.5 < channels["web"] / len(events) < 0.7  # observed: 60%
    mean_real = statistics.mean(e["amount"] for e in real)
    assert abs(statistics.mean(e["amount"] for e in events) - mean_real) < 0.15 * mean_real
    assert 0.1 < sum(e["gift"] for e in events) / len(events) < 0.3
    users = {e["user_id"] for e in events}
    assert 120 < len(users) < 320  # about as many entities as observed for as many events
    assert not {e["email"] for e in events} & {e["email"] for e in real}


def test_mock_events_refuse_a_differently_defined_source(shop, tmp_path):
    _, production, _ = shop
    other = write_project(tmp_path / "other", DEFINITIONS.replace('"gift": "bool",\n', ""))
    other_text = (other / "definitions.py").read_text().replace('"gift": "bool", ', "")
    (other / "definitions.py").write_text(other_text)
    with Project(other, clock=lambda: NOW) as p:
        with pytest.raises(DefinitionError, match="defined differently"):
            p.mock_events("orders", 10, like=production)
        with pytest.raises(ValueError, match="at least 1"):
            mock_events(p.definitions.streams["orders"], 0, now_us=to_micros(NOW))
