"""PII policies at ingest: pseudonymized or dropped before anything is stored, in the log and
the dead letters alike; the secret's own refusals; features that would expose PII refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from headwater import DefinitionError, Entity, Feature, Project, Stream, agg
from headwater.cli import app
from headwater.log.base import DEAD_LETTER_STREAM
from headwater.privacy.policies import SECRET_ENV, PiiSecret, PiiSecretError
from tests.conftest import write_project

SECRET = os.environ[SECRET_ENV]  # set for the suite by tests/conftest.py
DEFINITIONS = """
from headwater import Entity, Feature, Stream, agg

signups = Stream(
    "signups",
    fields={"user_id": "string", "email": "string", "phone": "string", "ts": "timestamp"},
    key="user_id", time="ts", owner="growth", description="Sign-ups",
    pii={"email": "pseudonymize", "phone": "drop"},
)
user = Entity("user", keys="user_id", owner="growth", description="A user")
emails = Feature(
    "emails", entity=user, stream=signups, aggregation=agg.count_distinct("email"),
    windows=["lifetime"], owner="growth", description="Distinct emails",
)
"""
CLEAR = ["ada@mail.example", "+44 20 7946 0000", "grace@mail.example"]


def events() -> list[dict]:
    return [
        {"user_id": "u1", "email": "ada@mail.example", "phone": "+44 20 7946 0000", "ts": 1.7e9},
        {"user_id": "u2", "email": "grace@mail.example", "ts": 1.7e9 + 1},
        {"user_id": "u2", "email": "grace@mail.example", "ts": 1.7e9 + 2},
    ]


@pytest.fixture
def project(tmp_path):
    with Project(
        write_project(tmp_path / "p", DEFINITIONS), clock=lambda: 1_700_000_100_000_000
    ) as p:
        yield p


def payloads(p: Project, stream: str) -> list[dict]:
    return [orjson.loads(r.payload) for r in p.log.read(stream, 0, p.log.end_offset(stream))]


def test_pii_is_pseudonymized_or_dropped_before_the_log_on_both_ingest_paths(project):
    secret = PiiSecret(SECRET.encode())
    assert project.ingest("signups", events()[:2]).accepted == 2
    table = pa.Table.from_pylist(events()[2:])
    assert project.ingest("signups", table).accepted == 1  # the columnar path
    stored = payloads(project, "signups")
    assert [e["email"] for e in stored] == [
        secret.pseudonym("ada@mail.example"),
        secret.pseudonym("grace@mail.example"),
        secret.pseudonym("grace@mail.example"),
    ]
    assert all("phone" not in e for e in stored)
    raw = Path(project.root / ".headwater" / "log.db").read_bytes()
    for clear in CLEAR:
        assert clear.encode() not in raw
    # pseudonyms keep joins and counts: two distinct emails, u2's counted once
    project.process()
    assert project.online_features({"user_id": "u2"}, ["emails_lifetime"]) == {"emails_lifetime": 1}


def test_a_rejected_pii_event_is_dead_lettered_without_its_clear_values(project):
    bad = [
        {"user_id": "u3", "email": "eve@mail.example", "phone": "555-0100", "ts": "yesterday"},
        {"user_id": "u4", "email": 12345, "ts": 1.7e9},  # the wrong type: the reason quotes it
        "eve@mail.example",  # not an object
    ]
    result = project.ingest("signups", bad)
    assert result.accepted == 0 and len(result.rejected) == 3
    assert all("12345" not in r.reason and "eve@" not in r.reason for r in result.rejected)
    dead = payloads(project, DEAD_LETTER_STREAM)
    text = orjson.dumps(dead).decode()
    assert "eve@mail.example" not in text and "555-0100" not in text and "12345" not in text
    secret = PiiSecret(SECRET.encode())
    assert dead[0]["event"]["email"] == secret.pseudonym("eve@mail.example")
    assert "phone" not in dead[0]["event"]
    assert dead[2]["event"].startswith("withheld")


def test_without_a_secret_pii_events_and_the_server_are_refused_with_what_to_do(
    tmp_path, monkeypatch
):
    monkeypatch.delenv(SECRET_ENV)
    with Project(write_project(tmp_path / "p", DEFINITIONS)) as p:
        with pytest.raises(PiiSecretError, match=r"HEADWATER_PII_SECRET.*init-secret"):
            p.ingest("signups", events())
        assert p.log.end_offset("signups") == 0 and p.log.end_offset(DEAD_LETTER_STREAM) == 0
        with pytest.raises(PiiSecretError, match="signups"):
            p.serve(port=1)  # refused before anything binds


def test_the_secret_file_must_be_the_owners_only_and_long_enough(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV)
    folder = write_project(tmp_path / "p", DEFINITIONS)
    cli = CliRunner()
    made = cli.invoke(app, ["pii", "init-secret", "-p", str(folder)])
    assert made.exit_code == 0, made.output
    secret_file = folder / ".headwater" / "pii.secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert 'secret_file = ".headwater/pii.secret"' in (folder / "headwater.toml").read_text()
    again = cli.invoke(app, ["pii", "init-secret", "-p", str(folder)])
    assert again.exit_code == 2 and "already names" in again.output  # never replaced
    with Project(folder) as p:
        p.ingest("signups", events()[:1])
        first = payloads(p, "signups")[0]["email"]
    expected = PiiSecret(secret_file.read_text().strip().encode()).pseudonym("ada@mail.example")
    assert first == expected
    secret_file.chmod(0o644)
    with pytest.raises(PiiSecretError, match="chmod 600"):
        Project(folder)
    secret_file.chmod(0o600)
    secret_file.write_text("short\n")
    with pytest.raises(PiiSecretError, match="at least 32"):
        Project(folder)


def test_the_secret_itself_is_refused_in_headwater_toml(tmp_path):
    folder = write_project(tmp_path / "p", DEFINITIONS)
    with (folder / "headwater.toml").open("a") as f:
        f.write('[pii]\nsecret = "0123456789abcdef0123456789abcdef"\n')
    with pytest.raises(Exception, match="never goes in headwater.toml"):
        Project(folder)


def test_features_that_would_expose_pii_are_refused_and_counts_allowed():
    stream = Stream(
        "signups",
        fields={"user_id": "string", "email": "string", "ts": "timestamp"},
        key="user_id",
        time="ts",
        owner="growth",
        description="Sign-ups",
        pii=["email"],
    )
    user = Entity("user", keys="user_id", owner="growth", description="A user")
    common = dict(entity=user, stream=stream, owner="growth", description="d")
    for exposing in (agg.last("email"), agg.first("email"), agg.last_k("email", 3)):
        with pytest.raises(DefinitionError, match="would expose its values"):
            Feature("f", aggregation=exposing, **common)
    Feature("n", aggregation=agg.count_distinct("email"), **common)


def test_pii_on_keys_and_unknown_policies_are_refused():
    base = dict(
        fields={"user_id": "string", "email": "string", "ts": "timestamp"},
        key="user_id",
        time="ts",
        owner="growth",
        description="d",
    )
    with pytest.raises(DefinitionError, match="key 'user_id' can only be pseudonymized"):
        Stream("s", pii={"user_id": "encrypt"}, **base)
    with pytest.raises(DefinitionError, match="'ts' is the time or the id"):
        Stream("s", pii=["ts"], **base)
    assert Stream("s", pii=["user_id"], **base).pii_policies == {"user_id": "pseudonymize"}
    with pytest.raises(DefinitionError, match="did you mean 'pseudonymize'"):
        Stream("s", pii={"email": "pseudonymise"}, **base)
    with pytest.raises(DefinitionError, match="not one of pseudonymize, encrypt, drop"):
        Stream("s", pii={"email": "hash"}, **base)
    # the default policy changes no stream version (projects written before keep theirs)
    assert "pii_policies" not in Stream("s", pii=["email"], **base).spec()
    assert Stream("s", pii={"email": "drop"}, **base).spec()["pii_policies"] == {"email": "drop"}
