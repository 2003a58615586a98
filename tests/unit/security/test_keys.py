"""API keys on both metadata backends (SQLite and a real PostgreSQL): secrets shown once and
stored only as digests, refusals with their reasons, revocation seen within the cache time."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from headwater.security.keys import KEYS, KeyManagementError, KeyStore, Unauthenticated
from headwater.security.scopes import Permission, ScopeError, granted, parse_scope
from headwater.stores.metadata.base import MetadataStore
from headwater.stores.metadata.postgres import PostgresMetadataStore
from headwater.stores.metadata.sqlite import SqliteMetadataStore

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
NOW = 1_800_000_000_000_000


@pytest.fixture(params=["sqlite", "postgres"])
def metadata(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    if request.param == "sqlite":
        store: MetadataStore = SqliteMetadataStore(tmp_path / "m.db")
        yield store
        store.close()
        return
    schema = "t_" + uuid.uuid4().hex
    store = PostgresMetadataStore(PG_URL, schema=schema)
    yield store
    store.close()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


class Clocks:
    def __init__(self) -> None:
        self.now_us, self.mono = NOW, 100.0


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def _keys(metadata: MetadataStore, clocks: Clocks) -> KeyStore:
    return KeyStore(metadata, lambda: clocks.now_us, monotonic=lambda: clocks.mono)


def test_a_key_verifies_and_only_its_digest_is_stored(metadata, clocks):
    keys = _keys(metadata, clocks)
    key, secret = keys.create("growth", ["ingest:clicks", "predict:churn"], by="ana")
    assert secret.startswith(f"hw_{key.id}_") and len(secret) == 3 + 16 + 1 + 43
    assert keys.verify(secret) == key
    stored = metadata.get_records(KEYS)[key.id]
    raw = secret.split("_", 2)[2]
    assert stored["digest"] == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in repr(stored) and secret not in repr(stored)
    # a second store over the same metadata (another replica) verifies it too
    assert _keys(metadata, clocks).verify(secret).team == "growth"
    other_key, other = keys.create("growth", ["ingest:clicks"], by="ana")
    assert other != secret and other_key.id != key.id


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "malformed"),
        ("Bearer x", "malformed"),
        ("hw_0123456789abcdef_" + "A" * 43, "unknown API key"),
        ("hw_0123456789abcdef_" + "A" * 42, "malformed"),
        ("hw_0123456789ABCDEF_" + "A" * 43, "malformed"),
    ],
)
def test_bad_tokens_are_refused_with_their_reason(metadata, clocks, token, reason):
    keys = _keys(metadata, clocks)
    keys.create("growth", ["admin"], by="ana")
    with pytest.raises(Unauthenticated, match=reason):
        keys.verify(token)


def test_a_wrong_secret_for_a_known_id_is_refused(metadata, clocks):
    keys = _keys(metadata, clocks)
    key, secret = keys.create("growth", ["admin"], by="ana")
    forged = f"hw_{key.id}_" + ("B" if secret[-1] != "B" else "C") * 43
    with pytest.raises(Unauthenticated, match="unknown API key"):
        keys.verify(forged)


def test_revocation_reaches_another_replica_within_the_cache_time(metadata, clocks):
    admin = _keys(metadata, clocks)
    replica = _keys(metadata, clocks)
    key, secret = admin.create("growth", ["predict:churn"], by="ana")
    assert replica.verify(secret).id == key.id  # cached now
    admin.revoke(key.id)
    clocks.mono += 4.9
    assert replica.verify(secret).id == key.id  # still within the 5 s cache
    clocks.mono += 0.2
    with pytest.raises(Unauthenticated, match="revoked"):
        replica.verify(secret)
    assert admin.get(key.id).state(clocks.now_us) == "revoked"


def test_a_verified_token_is_remembered_only_as_itself_and_never_past_a_revocation(
    metadata, clocks
):
    keys = _keys(metadata, clocks)
    key, secret = keys.create("growth", ["predict:churn"], by="ana")
    assert keys.verify(secret).id == key.id
    assert keys.verify(secret).id == key.id  # from the verified tokens now
    forged = secret[:-1] + ("B" if secret[-1] != "B" else "C")
    with pytest.raises(Unauthenticated, match="unknown API key"):
        keys.verify(forged)  # same id, another secret: not the remembered token
    keys.revoke(key.id)
    with pytest.raises(Unauthenticated, match="revoked"):
        keys.verify(secret)  # refused at once where it was revoked


def test_a_new_key_works_at_once_on_a_replica_with_a_fresh_cache(metadata, clocks):
    admin, replica = _keys(metadata, clocks), _keys(metadata, clocks)
    replica.list()  # fills the replica's cache
    clocks.mono += 1.0
    _, secret = admin.create("growth", ["predict:churn"], by="ana")
    assert replica.verify(secret).team == "growth"


def test_expired_keys_are_refused(metadata, clocks):
    keys = _keys(metadata, clocks)
    _, secret = keys.create("growth", ["admin"], by="ana", expires_us=NOW + 1_000_000)
    assert keys.verify(secret)
    clocks.now_us += 1_000_000
    with pytest.raises(Unauthenticated, match="expired"):
        keys.verify(secret)
    with pytest.raises(KeyManagementError, match="future"):
        keys.create("growth", ["admin"], by="ana", expires_us=NOW)


def test_key_management_refusals(metadata, clocks):
    keys = _keys(metadata, clocks)
    with pytest.raises(KeyManagementError, match="at least one"):
        keys.create("growth", [], by="ana")
    with pytest.raises(KeyManagementError, match="invalid team"):
        keys.create("growth team", ["admin"], by="ana")
    with pytest.raises(ScopeError, match="unknown scope"):
        keys.create("growth", ["write:everything"], by="ana")
    with pytest.raises(KeyManagementError, match="no key with id"):
        keys.revoke("0123456789abcdef")
    assert keys.list() == []


def test_the_sqlite_file_holds_no_secret(tmp_path, clocks):
    store = SqliteMetadataStore(tmp_path / "m.db")
    _, secret = _keys(store, clocks).create("growth", ["admin"], by="ana")
    store.close()
    data = (tmp_path / "m.db").read_bytes()
    for suffix in ("-wal",):
        wal = tmp_path / f"m.db{suffix}"
        data += wal.read_bytes() if wal.exists() else b""
    assert secret.split("_", 2)[2].encode() not in data
    with sqlite3.connect(tmp_path / "m.db") as db:
        assert db.execute("SELECT count(*) FROM records").fetchone()[0] == 1


OWNERS = {
    ("stream", "clicks"): "web",
    ("stream", "orders"): "payments",
    ("service", "churn"): "growth",
    ("model", "churn"): "growth",
    ("feature", "visits"): "web",
}


@pytest.mark.parametrize(
    ("scope", "permission", "allowed"),
    [
        ("admin", Permission("ingest", "orders"), True),
        ("admin", Permission("alerts:ack"), True),
        ("ingest:clicks", Permission("ingest", "clicks"), True),
        ("ingest:clicks", Permission("ingest", "orders"), False),
        ("ingest:*", Permission("ingest", "orders"), True),
        ("ingest:*", Permission("predict", "churn"), False),
        ("predict:churn", Permission("predict", "churn"), True),
        ("predict:churn", Permission("predict", "fraud"), False),
        ("features:read", Permission("features:read", "visits"), True),
        ("features:read:visits", Permission("features:read", "visits"), True),
        ("features:read:visits", Permission("features:read", "spend"), False),
        ("models:promote", Permission("models:promote", "churn"), True),
        ("models:promote:fraud", Permission("models:promote", "churn"), False),
        ("alerts:ack", Permission("alerts:ack"), True),
        ("alerts:ack", Permission("ingest", "clicks"), False),
        ("web:*", Permission("ingest", "clicks"), True),
        ("web:*", Permission("features:read", "visits"), True),
        ("web:*", Permission("ingest", "orders"), False),
        ("web:*", Permission("alerts:ack"), False),
        ("growth:*", Permission("predict", "churn"), True),
        ("growth:*", Permission("models:promote", "churn"), True),
        ("growth:*", Permission("ingest", "unknown_stream"), False),
        ("feedback:orders", Permission("ingest", "orders"), True),
        ("feedback:orders", Permission("predict", "churn"), False),
    ],
)
def test_scopes_grant_exactly_what_they_name(scope, permission, allowed):
    owner_of = lambda kind, name: OWNERS.get((kind, name))  # noqa: E731
    assert granted([parse_scope(scope)], permission, owner_of) is allowed


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ingest",
        "predict",
        "ingest:",
        "ingest:a:b",
        "feedback",
        "features:read:a:b",
        "anything",
        "in gest:x",
        "ingest:x\n",
        ":*",
        "admin:x",
    ],
)
def test_malformed_scopes_are_refused_with_the_grammar(bad):
    with pytest.raises(ScopeError):
        parse_scope(bad)
