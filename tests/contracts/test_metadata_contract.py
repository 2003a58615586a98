"""The metadata port's contract, run against every backend (SQLite and a real PostgreSQL).

PostgreSQL must be reachable at ``PG_URL``; a missing server fails these tests, never skips them.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from headwater import Project
from headwater.project.planning import apply_plan, make_plan
from headwater.stores.metadata import postgres as metadata_postgres
from headwater.stores.metadata.base import MetadataStore, RegisteredDefinition
from headwater.stores.metadata.postgres import (
    MIGRATIONS,
    MetadataSchemaError,
    PostgresMetadataStore,
)
from headwater.stores.metadata.sqlite import SqliteMetadataStore

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Backend:
    """One backend under test: opens stores on one location and reads its raw history."""

    name: str
    open: Callable[[], MetadataStore]
    actions: Callable[[str, str], list[tuple[str, str]]]
    opened: list[MetadataStore] = field(default_factory=list)

    def store(self) -> MetadataStore:
        store = self.open()
        self.opened.append(store)
        return store


def _sqlite_backend(tmp_path: Path) -> Backend:
    path = tmp_path / "m.db"

    def actions(kind: str, name: str) -> list[tuple[str, str]]:
        with sqlite3.connect(path) as db:
            rows = db.execute(
                "SELECT version, action FROM definition_history WHERE kind = ? AND name = ? "
                "ORDER BY rowid",
                (kind, name),
            ).fetchall()
        db.close()
        return rows

    return Backend("sqlite", lambda: SqliteMetadataStore(path), actions)


def _pg_backend(schema: str) -> Backend:
    def actions(kind: str, name: str) -> list[tuple[str, str]]:
        query = sql.SQL(
            "SELECT version, action FROM {}.definition_history WHERE kind = %s AND name = %s "
            "ORDER BY id"
        ).format(sql.Identifier(schema))
        with psycopg.connect(PG_URL) as conn:
            return conn.execute(query, (kind, name)).fetchall()

    return Backend("postgres", lambda: PostgresMetadataStore(PG_URL, schema=schema), actions)


def _drop_schema(schema: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh, unique schema name, dropped afterwards."""
    schema = "t_" + uuid.uuid4().hex
    yield schema
    _drop_schema(schema)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        chosen = _sqlite_backend(tmp_path)
    else:
        chosen = _pg_backend(request.getfixturevalue("pg_schema"))
    yield chosen
    for store in chosen.opened:
        store.close()


@pytest.fixture
def store(backend: Backend) -> MetadataStore:
    return backend.store()


def _definition(
    name: str,
    version: str = "v1",
    *,
    kind: str = "feature",
    spec: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    at: int = 1,
) -> RegisteredDefinition:
    return RegisteredDefinition(
        kind,
        name,
        version,
        spec if spec is not None else {"name": name, "version": version},
        meta if meta is not None else {"owner": "growth", "description": name},
        at,
    )


# -- the contract -----------------------------------------------------------------------


def test_a_new_store_is_empty(store: MetadataStore) -> None:
    assert store.definitions() == []
    assert store.history("feature", "spend") == []


def test_applied_definitions_read_back_exactly(store: MetadataStore) -> None:
    nested = {
        "aggregation": {"op": "sum", "field": "amount", "args": [1, 2.5, None, True]},
        "where": ["==", ["col", "status"], "paid"],
        "windows": ["1h", "7d", "lifetime"],
        "deep": {"a": {"b": {"c": [{"d": -1}, [], {}]}}},
        "big": 2**62,
        "small": 1e-9,
    }
    meta = {"owner": "paiements", "description": "Dépenses — 支出 🧾", "tags": ["€", "\n\t\"'\\"]}
    spend = _definition("spend", "abc123", spec=nested, meta=meta, at=1_700_000_000_000_000)
    user = _definition("user", "e1", kind="entity", at=7)
    store.apply([spend, user], [])
    assert store.definitions() == [user, spend]  # ordered by kind, then name
    assert store.history("feature", "spend") == [spend]


def test_values_json_cannot_hold_are_stored_as_text_in_spec(store: MetadataStore) -> None:
    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    store.apply([_definition("spend", spec={"since": when})], [])
    (registered,) = store.definitions()
    assert registered.spec == {"since": str(when)}


def test_reapplying_replaces_and_history_keeps_every_version_in_order(
    store: MetadataStore,
) -> None:
    versions = [_definition("spend", f"v{i}", at=i) for i in range(1, 6)]
    for d in versions:
        store.apply([d, _definition("clicks", "c1")], [])
    assert store.definitions() == [_definition("clicks", "c1"), versions[-1]]
    assert store.history("feature", "spend") == versions
    assert store.history("feature", "clicks") == [_definition("clicks", "c1")] * 5
    assert store.history("entity", "spend") == []


def test_the_same_definition_twice_in_one_apply_keeps_the_last(store: MetadataStore) -> None:
    first, second = _definition("spend", "v1"), _definition("spend", "v2")
    store.apply([first, second], [])
    assert store.definitions() == [second]
    assert store.history("feature", "spend") == [first, second]


def test_removals_delete_and_are_recorded(backend: Backend, store: MetadataStore) -> None:
    spend, clicks = _definition("spend", "v1"), _definition("clicks", "c1")
    store.apply([spend, clicks], [])
    store.apply([], [("feature", "spend"), ("feature", "never-registered")])
    assert store.definitions() == [clicks]
    assert store.history("feature", "spend") == [spend]  # history lists applies only
    assert backend.actions("feature", "spend") == [("v1", "apply"), ("v1", "remove")]
    assert backend.actions("feature", "never-registered") == []
    again = _definition("spend", "v2", at=9)
    store.apply([again], [])
    assert store.definitions() == [clicks, again]
    assert store.history("feature", "spend") == [spend, again]


def test_upserts_and_removals_apply_together(store: MetadataStore) -> None:
    store.apply([_definition("spend"), _definition("clicks")], [])
    store.apply([_definition("spend", "v2")], [("feature", "clicks")])
    assert store.definitions() == [_definition("spend", "v2")]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(_definition("broken", spec={("not", "a", "str", "key"): 1}), id="spec"),  # type: ignore[dict-item]
        pytest.param(_definition("broken", meta={"owner": object()}), id="meta"),
    ],
)
def test_an_apply_that_fails_half_way_changes_nothing(
    backend: Backend, store: MetadataStore, bad: RegisteredDefinition
) -> None:
    before = [_definition("spend", "v1"), _definition("clicks", "c1")]
    store.apply(before, [])
    with pytest.raises(TypeError):
        store.apply([_definition("spend", "v2"), bad], [("feature", "clicks")])
    assert store.definitions() == sorted(before, key=lambda d: d.name)
    assert store.history("feature", "spend") == [before[0]]
    assert store.history("feature", "broken") == []
    assert backend.actions("feature", "clicks") == [("c1", "apply")]
    store.apply([_definition("spend", "v3")], [])  # the store is still usable
    assert [d.version for d in store.history("feature", "spend")] == ["v1", "v3"]


def test_two_stores_see_each_others_writes(backend: Backend) -> None:
    first, second = backend.store(), backend.store()
    first.apply([_definition("spend", "v1")], [])
    assert second.definitions() == [_definition("spend", "v1")]
    second.apply([_definition("spend", "v2")], [("feature", "missing")])
    assert first.definitions() == [_definition("spend", "v2")]
    assert [d.version for d in first.history("feature", "spend")] == ["v1", "v2"]


def test_one_store_is_safe_to_share_between_threads(store: MetadataStore) -> None:
    def work(worker: int) -> None:
        for i in range(20):
            store.apply([_definition(f"f{worker}", f"v{i}", at=i)], [])
            assert store.definitions()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [d.version for d in store.definitions()] == ["v19"] * 4
    for w in range(4):
        assert [d.version for d in store.history("feature", f"f{w}")] == [
            f"v{i}" for i in range(20)
        ]


# -- records: JSON documents by (collection, id) ------------------------------------------


def test_an_empty_collection_reads_as_empty(store: MetadataStore) -> None:
    assert store.get_records("runs") == {}
    store.put_records([])
    assert store.get_records("runs") == {}


def test_records_read_back_exactly(store: MetadataStore) -> None:
    run: dict[str, Any] = {
        "status": "succeeded",
        "metrics": {"auc": 0.8734, "loss": [0.5, 0.25, 0.125], "tiny": 1e-9, "third": 1 / 3},
        "params": {"depth": 6, "rate": 0.1, "big": 2**62, "negative": -273.15, "none": None},
        "flags": [True, False, None, [], {}],
        "deep": {"a": {"b": {"c": [{"d": -1}, ["x", 2.5]]}}},
        "owner": "paiements — 支出 🧾",
        "notes": "€ \n\t\"'\\ é",
    }
    model = {"name": "modèle", "version": 3, "uri": "s3://bucket/ключ", "scores": [1.5, 2.0]}
    store.put_records([("runs", "run-1", run), ("models", "churn/3", model)])
    assert store.get_records("runs") == {"run-1": run}
    assert store.get_records("models") == {"churn/3": model}
    assert store.get_records("runs")["run-1"]["params"]["rate"] == 0.1
    assert isinstance(store.get_records("models")["churn/3"]["scores"][1], float)


def test_records_keep_the_order_of_their_first_write(store: MetadataStore) -> None:
    store.put_records([("runs", "c", {"n": 1}), ("runs", "a", {"n": 2})])
    store.put_records([("runs", "b", {"n": 3})])
    assert list(store.get_records("runs")) == ["c", "a", "b"]
    # an update replaces the document and keeps the id where it first was
    store.put_records([("runs", "a", {"n": 20, "updated": True}), ("runs", "d", {"n": 4})])
    store.put_records([("runs", "c", {"n": 10})])
    assert list(store.get_records("runs").items()) == [
        ("c", {"n": 10}),
        ("a", {"n": 20, "updated": True}),
        ("b", {"n": 3}),
        ("d", {"n": 4}),
    ]


def test_documents_keep_the_order_of_their_keys(store: MetadataStore) -> None:
    """A profile's features, a model's columns: the order they were written in is meaning."""
    keys = ["sessions_30d", "conversion_7d", "page_views_30d", "sessions_1d", "a", "b_long"]
    doc = {k: {"z": i, "a": -i} for i, k in enumerate(keys)}
    store.put_records([("profiles", "churn/1", doc)])
    back = store.get_records("profiles")["churn/1"]
    assert list(back) == keys and all(list(v) == ["z", "a"] for v in back.values())
    spec = {"features": {k: 1 for k in keys}}
    store.apply([_definition("churn", "v1", kind="model", spec=spec)], [])
    assert list(store.definitions()[0].spec["features"]) == keys


def test_the_same_record_twice_in_one_put_keeps_the_last(store: MetadataStore) -> None:
    store.put_records([("aliases", "prod", {"v": 1}), ("aliases", "prod", {"v": 2})])
    assert store.get_records("aliases") == {"prod": {"v": 2}}


def test_collections_are_separate(store: MetadataStore) -> None:
    store.put_records(
        [("runs", "x", {"kind": "run"}), ("models", "x", {"kind": "model"}), ("runs", "y", {})]
    )
    store.put_records([("models", "x", {"kind": "model", "v": 2})])
    assert store.get_records("runs") == {"x": {"kind": "run"}, "y": {}}
    assert store.get_records("models") == {"x": {"kind": "model", "v": 2}}
    assert store.get_records("aliases") == {}
    assert store.get_records("Runs") == {}


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"at": object()}, id="object"),
        pytest.param({"when": datetime(2024, 5, 1, tzinfo=UTC)}, id="datetime"),
        pytest.param({("tuple", "key"): 1}, id="key"),
    ],
)
def test_a_put_with_a_doc_json_cannot_hold_writes_nothing(
    store: MetadataStore, bad: dict[Any, Any]
) -> None:
    store.put_records([("runs", "a", {"n": 1})])
    with pytest.raises(TypeError):
        store.put_records([("runs", "a", {"n": 2}), ("runs", "b", {"n": 3}), ("runs", "c", bad)])
    assert store.get_records("runs") == {"a": {"n": 1}}
    store.put_records([("runs", "b", {"n": 3})])  # the store is still usable
    assert store.get_records("runs") == {"a": {"n": 1}, "b": {"n": 3}}


def test_two_stores_see_each_others_records(backend: Backend) -> None:
    first, second = backend.store(), backend.store()
    first.put_records([("runs", "r1", {"status": "running"})])
    assert second.get_records("runs") == {"r1": {"status": "running"}}
    second.put_records([("runs", "r1", {"status": "done"}), ("runs", "r2", {"status": "new"})])
    assert first.get_records("runs") == {"r1": {"status": "done"}, "r2": {"status": "new"}}
    assert list(first.get_records("runs")) == ["r1", "r2"]


def test_records_can_be_read_by_id(store: MetadataStore) -> None:
    store.put_records([("keys", f"k{i}", {"n": i}) for i in range(1200)])
    wanted = ["k1199", "k3", "nope", "k3"]
    assert store.get_records("keys", wanted) == {"k3": {"n": 3}, "k1199": {"n": 1199}}
    assert store.get_records("keys", []) == {}
    assert len(store.get_records("keys", [f"k{i}" for i in range(1200)])) == 1200
    assert store.get_records("other", ["k3"]) == {}


def test_records_can_be_read_by_id_prefix(store: MetadataStore) -> None:
    """A prefix is matched byte for byte: LIKE's wildcards and the collation play no part."""
    ids = ["m1:1", "m1:2", "m10:1", "m_1:1", "mx1:1", "m%1:1", "M1:1", "m1", "m1;", "m:1"]
    store.put_records([("v", i, {"id": i}) for i in ids] + [("w", "m1:1", {"id": "w"})])
    assert list(store.get_records("v", prefix="m1:")) == ["m1:1", "m1:2"]
    assert list(store.get_records("v", prefix="m_1:")) == ["m_1:1"]
    assert list(store.get_records("v", prefix="m%1:")) == ["m%1:1"]
    assert list(store.get_records("v", prefix="m1")) == ["m1:1", "m1:2", "m10:1", "m1", "m1;"]
    assert store.get_records("v", prefix="nothing:") == {}
    assert store.get_records("v", ["m1:2", "m10:1"], prefix="m1:") == {"m1:2": {"id": "m1:2"}}


def test_add_keeps_the_first_document_of_an_id(store: MetadataStore) -> None:
    first = store.add_records("keys", [("a", {"v": 1}), ("b", {"v": 2})])
    assert first == {"a": {"v": 1}, "b": {"v": 2}}
    again = store.add_records("keys", [("a", {"v": 10}), ("c", {"v": 3})])
    assert again == {"a": {"v": 1}, "c": {"v": 3}}  # a is kept as first written
    assert store.get_records("keys") == {"a": {"v": 1}, "b": {"v": 2}, "c": {"v": 3}}


def test_concurrent_adds_of_one_id_all_answer_the_same_document(backend: Backend) -> None:
    stores = [backend.store() for _ in range(4)]
    answers: list[dict[str, Any]] = []
    barrier = threading.Barrier(len(stores))

    def add(store: MetadataStore, n: int) -> None:
        barrier.wait()
        answers.append(store.add_records("keys", [("entity-1", {"writer": n})])["entity-1"])

    threads = [threading.Thread(target=add, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 4 and all(a == answers[0] for a in answers)
    assert stores[0].get_records("keys") == {"entity-1": answers[0]}


def test_delete_removes_records_and_counts_them(store: MetadataStore) -> None:
    store.put_records([("keys", "a", {}), ("keys", "b", {}), ("runs", "a", {"kept": True})])
    assert store.delete_records("keys", ["a", "zzz", "a"]) == 1
    assert store.get_records("keys") == {"b": {}}
    assert store.get_records("runs") == {"a": {"kept": True}}
    assert store.delete_records("keys", []) == 0
    # a deleted id can be added anew
    assert store.add_records("keys", [("a", {"new": 1})]) == {"a": {"new": 1}}


# -- PostgreSQL only: migrations, URLs, server-side failures --------------------------------


def _migration_rows(schema: str) -> list[tuple[int, datetime]]:
    query = sql.SQL("SELECT version, applied_at FROM {}.schema_migrations ORDER BY version")
    with psycopg.connect(PG_URL) as conn:
        return conn.execute(query.format(sql.Identifier(schema))).fetchall()


def test_concurrent_opens_migrate_once_and_reopening_is_a_no_op(pg_schema: str) -> None:
    barrier = threading.Barrier(4)
    stores: list[PostgresMetadataStore] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        barrier.wait()
        try:
            stores.append(PostgresMetadataStore(PG_URL, schema=pg_schema))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        rows = _migration_rows(pg_schema)
        assert [v for v, _ in rows] == [1, 2, 3, 4]
        stores[0].apply([_definition("spend")], [])
        stores.append(PostgresMetadataStore(PG_URL, schema=pg_schema))
        assert _migration_rows(pg_schema) == rows
        assert stores[-1].definitions() == [_definition("spend")]
    finally:
        for s in stores:
            s.close()


def test_the_schema_can_come_from_the_url(pg_schema: str) -> None:
    store = PostgresMetadataStore(f"{PG_URL}?connect_timeout=10&schema={pg_schema}", "ignored")
    try:
        assert store.schema == pg_schema
        store.apply([_definition("spend")], [])
        assert [v for v, _ in _migration_rows(pg_schema)] == [1, 2, 3, 4]
    finally:
        store.close()
    other = PostgresMetadataStore(PG_URL, schema=pg_schema)
    try:
        assert other.definitions() == [_definition("spend")]
    finally:
        other.close()


def test_a_schema_at_version_1_is_upgraded_keeping_its_definitions(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(MIGRATIONS) == 4
    spend, clicks = _definition("spend", "v1"), _definition("clicks", "c1", at=5)
    with monkeypatch.context() as m:
        m.setattr(metadata_postgres, "MIGRATIONS", MIGRATIONS[:1])
        old = PostgresMetadataStore(PG_URL, schema=pg_schema)
        try:
            old.apply([spend, clicks], [])
            old.apply([_definition("spend", "v2", at=2)], [("feature", "clicks")])
        finally:
            old.close()
    before = _migration_rows(pg_schema)
    assert [v for v, _ in before] == [1]
    with psycopg.connect(PG_URL) as conn:
        tables = "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename"
        names = [t for (t,) in conn.execute(tables, (pg_schema,))]
    assert names == ["definition_history", "definitions", "schema_migrations"]

    store = PostgresMetadataStore(PG_URL, schema=pg_schema)
    try:
        after = _migration_rows(pg_schema)
        assert [v for v, _ in after] == [1, 2, 3, 4]
        assert after[0] == before[0]  # step 1 is not run again
        assert store.definitions() == [_definition("spend", "v2", at=2)]
        assert store.history("feature", "spend") == [spend, _definition("spend", "v2", at=2)]
        assert store.history("feature", "clicks") == [clicks]
        store.put_records([("runs", "r1", {"ok": True})])
        assert store.get_records("runs") == {"r1": {"ok": True}}
    finally:
        store.close()


def test_a_schema_newer_than_this_headwater_is_refused(pg_schema: str) -> None:
    PostgresMetadataStore(PG_URL, schema=pg_schema).close()
    with psycopg.connect(PG_URL) as conn:
        table = sql.SQL("{}.schema_migrations").format(sql.Identifier(pg_schema))
        conn.execute(sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(table), (999,))
    with pytest.raises(MetadataSchemaError, match="version 999, newer than this headwater"):
        PostgresMetadataStore(PG_URL, schema=pg_schema)


def test_a_statement_the_server_rejects_rolls_the_whole_apply_back(pg_schema: str) -> None:
    store = PostgresMetadataStore(PG_URL, schema=pg_schema)
    try:
        store.apply([_definition("spend", "v1")], [])
        # a text column cannot hold U+0000: the second row fails after the first was written
        bad = _definition("broken \x00 name")
        with pytest.raises(psycopg.DataError):
            store.apply([_definition("spend", "v2"), bad], [("feature", "spend")])
        assert store.definitions() == [_definition("spend", "v1")]
        assert store.history("feature", "spend") == [_definition("spend", "v1")]
        store.apply([_definition("spend", "v3")], [])
        assert [d.version for d in store.history("feature", "spend")] == ["v1", "v3"]
    finally:
        store.close()


def test_plan_apply_plan_against_postgres(small_project: Path, pg_schema: str) -> None:
    with Project(small_project) as project:
        definitions = project.definitions.all()
    store = PostgresMetadataStore(PG_URL, schema=pg_schema)
    try:
        first = make_plan(definitions, store)
        assert first.summary() == {"added": len(definitions)}
        applied = apply_plan(definitions, store, now_us=1_700_000_000_000_000, by="alice")
        assert applied.pending == first.pending
        after = make_plan(definitions, store)
        assert after.pending == []
        assert after.summary() == {"unchanged": len(definitions)}
        registered = {(d.kind, d.name): d for d in store.definitions()}
        for d in definitions:
            assert registered[(d.kind, d.name)].spec == d.spec()
            assert registered[(d.kind, d.name)].meta == {**d.meta(), "applied_by": "alice"}
    finally:
        store.close()
