"""The ``encrypt`` PII policy: per-entity data keys wrapped under the secret, ciphertext in the
log, the history and the dead letters; ``pii reveal`` with the secret; ``pii erase`` makes an
entity's encrypted values unreadable for good and removes its online state."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from headwater import DefinitionError, Project, Stream
from headwater.cli import app
from headwater.errors import HeadwaterError
from headwater.ingestion.protect import DATA_KEYS
from headwater.log.base import AUDIT_STREAM, DEAD_LETTER_STREAM
from headwater.privacy.policies import PiiSecret, UnreadableValue
from tests.conftest import write_project

DEFINITIONS = """
from headwater import Entity, Feature, Stream, agg

signups = Stream(
    "signups",
    fields={"user_id": "string", "email": "string", "iban": "string", "plan": "string",
            "amount": "float", "ts": "timestamp"},
    key="user_id", time="ts", owner="growth", description="Sign-ups",
    pii={"email": "encrypt", "iban": "encrypt"},
)
user = Entity("user", keys="user_id", owner="growth", description="A user")
features = [
    Feature("emails", entity=user, stream=signups, aggregation=agg.count_distinct("email"),
            windows=["lifetime"], owner="growth", description="Distinct emails"),
    Feature("signups", entity=user, stream=signups, aggregation=agg.count(),
            windows=["lifetime"], owner="growth", description="Sign-ups"),
]
"""
TS = 1_700_000_000


def _events() -> list[dict]:
    return [
        {
            "user_id": "u1",
            "email": "ada@mail.example",
            "iban": "GB33BUKB20201555555555",
            "plan": "pro",
            "amount": 1.0,
            "ts": TS,
        },
        {
            "user_id": "u1",
            "email": "ada@mail.example",
            "iban": None,
            "plan": "pro",
            "amount": 2.0,
            "ts": TS + 1,
        },
        {
            "user_id": "u1",
            "email": "ada.l@mail.example",
            "plan": "pro",
            "amount": 3.0,
            "ts": TS + 2,
        },
        {"user_id": "u2", "email": "ada@mail.example", "plan": "free", "amount": 4.0, "ts": TS + 3},
    ]


@pytest.fixture
def project(tmp_path):
    folder = write_project(tmp_path / "p", DEFINITIONS)
    with Project(folder) as p:
        result = p.ingest("signups", _events())
        assert result.accepted == 4
        yield p


def _logged(p: Project, stream: str = "signups") -> list[dict]:
    return [orjson.loads(r.payload) for r in p.log.read(stream, 0, 1000)]


def test_encrypted_fields_are_ciphertext_in_the_log_deterministic_per_entity(project):
    rows = _logged(project)
    text = b"".join(r.payload for r in project.log.read("signups", 0, 1000))
    assert (
        b"ada@" not in text
        and b"ada.l@" not in text
        and b"GB33" not in text
        and b"mail.example" not in text
    )
    assert all(r["email"].startswith("enc_") for r in rows)
    assert rows[0]["email"] == rows[1]["email"] != rows[2]["email"]  # one entity, one key
    assert rows[0]["email"] != rows[3]["email"]  # the same address, another entity's key
    assert rows[1]["iban"] is None and rows[0]["plan"] == "pro" and rows[3]["amount"] == 4.0
    keys = project.metadata.get_records(DATA_KEYS)
    assert len(keys) == 2 and all(k.startswith("dk_") for k in keys)
    # ids derived from the key under the secret; documents hold the wrapped key only
    assert all(set(doc) == {"wrapped"} for doc in keys.values())
    secret = project.core.protector.secret
    assert secret is not None
    assert set(keys) == {secret.key_id("user_id", "u1"), secret.key_id("user_id", "u2")}
    # count_distinct per entity counts the values through their ciphertexts
    project.process()
    got = project.online_features(
        [{"user_id": "u1"}, {"user_id": "u2"}], ["emails_lifetime", "signups_lifetime"]
    )
    assert [(r["emails_lifetime"], r["signups_lifetime"]) for r in got] == [(2, 3), (1, 1)]


def test_dead_letters_keep_the_ciphertext_never_the_clear_value(project):
    bad = [
        {"user_id": "u3", "email": "grace@mail.example", "plan": "pro", "amount": "lots", "ts": TS},
        {"email": "nokey@mail.example", "plan": "pro", "amount": 1.0, "ts": TS},
    ]
    result = project.ingest("signups", bad)
    assert len(result.rejected) == 2
    dead = [orjson.loads(r.payload) for r in project.log.read(DEAD_LETTER_STREAM, 0, 100)]
    assert b"mail.example" not in orjson.dumps(dead)
    assert dead[0]["event"]["email"].startswith("enc_")
    assert dead[1]["event"]["email"].startswith("withheld")
    # a rejected event's ciphertext is the one its entity's valid events get
    project.ingest("signups", [{**bad[0], "amount": 5.0}])
    assert _logged(project)[-1]["email"] == dead[0]["event"]["email"]


def test_reveal_decrypts_with_the_secret_and_is_audited(project):
    events = project.reveal("signups", "u1")
    assert [e["email"] for e in events] == [
        "ada@mail.example",
        "ada@mail.example",
        "ada.l@mail.example",
    ]
    assert events[0]["iban"] == "GB33BUKB20201555555555" and events[1]["iban"] is None
    assert [e["email"] for e in project.reveal("signups", "u2")] == ["ada@mail.example"]
    audit = [orjson.loads(r.payload) for r in project.log.read(AUDIT_STREAM, 0, 100)]
    assert [a["action"] for a in audit] == ["pii.reveal", "pii.reveal"]
    assert b"ada@" not in orjson.dumps(audit) and b"ada.l@" not in orjson.dumps(audit)
    with pytest.raises(HeadwaterError, match="unknown stream 'signup'.*signups"):
        project.reveal("signup", "u1")


def test_a_data_key_under_another_secret_is_unreadable():
    secret, other = PiiSecret(b"a" * 32), PiiSecret(b"b" * 32)
    wrapped = secret.wrap("dk_1", b"k" * 64)
    assert secret.unwrap("dk_1", wrapped) == b"k" * 64
    with pytest.raises(UnreadableValue, match="another PII secret"):
        other.unwrap("dk_1", wrapped)
    with pytest.raises(UnreadableValue):
        secret.unwrap("dk_2", wrapped)  # bound to its id


def test_erase_makes_the_entity_unreadable_and_removes_its_online_state(project):
    project.process()
    done = project.erase("user", "u1")
    assert (done.data_keys, done.states, done.streams) == (1, 1, ["signups"])  # one feature set
    assert "embedded log file keeps" in done.retained()
    assert [e["email"] for e in project.reveal("signups", "u1")] == [None, None, None]
    assert [e["email"] for e in project.reveal("signups", "u2")] == ["ada@mail.example"]
    got = project.online_features([{"user_id": "u1"}, {"user_id": "u2"}], ["signups_lifetime"])
    assert [r["signups_lifetime"] for r in got] == [0, 1]
    assert len(project.metadata.get_records(DATA_KEYS)) == 1
    # from a fresh process too: the key is gone from the store, not only from memory
    with Project(project.root) as again:
        assert again.reveal("signups", "u1")[0]["email"] is None
    assert project.erase("user", "u1").data_keys == 0  # erasing again finds nothing
    with pytest.raises(DefinitionError, match="no entity 'usr'.*user"):
        project.erase("usr", "u1")


def test_the_cli_reveals_and_erases(project):
    runner = CliRunner()
    folder = str(project.root)
    shown = runner.invoke(app, ["pii", "reveal", "signups", "u1", "-p", folder])
    assert shown.exit_code == 0, shown.output
    assert "ada.l@mail.example" in shown.output
    refused = runner.invoke(app, ["pii", "erase", "user", "u1", "-p", folder], input="n\n")
    assert refused.exit_code == 1 and project.reveal("signups", "u1")[0]["email"]
    erased = runner.invoke(app, ["pii", "erase", "user", "u1", "--yes", "-p", folder])
    assert erased.exit_code == 0, erased.output
    assert "unreadable now" in erased.output and "embedded log file keeps" in erased.output
    after = runner.invoke(app, ["pii", "reveal", "signups", "u1", "-p", folder])
    assert "(erased)" in after.output and "mail.example" not in after.output


def test_encrypt_needs_a_text_field():
    with pytest.raises(DefinitionError, match="needs a string field"):
        Stream(
            "s",
            fields={"k": "string", "age": "int", "ts": "timestamp"},
            key="k",
            time="ts",
            pii={"age": "encrypt"},
            owner="o",
            description="d",
        )
