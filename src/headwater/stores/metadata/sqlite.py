"""The embedded metadata store: SQLite."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from headwater.stores.metadata.base import RegisteredDefinition
from headwater.stores.sqlite_file import open_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS definitions (
    kind TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
    spec TEXT NOT NULL, meta TEXT NOT NULL, applied_at INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS definition_history (
    kind TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
    spec TEXT NOT NULL, meta TEXT NOT NULL, applied_at INTEGER NOT NULL, action TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    collection TEXT NOT NULL, id TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (collection, id)
);
"""


class SqliteMetadataStore:
    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = open_sqlite(path, _SCHEMA, "FULL")

    def definitions(self) -> list[RegisteredDefinition]:
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, name, version, spec, meta, applied_at FROM definitions "
                "ORDER BY kind, name"
            ).fetchall()
        return [_row(r) for r in rows]

    def apply(
        self, upserts: Sequence[RegisteredDefinition], removals: Sequence[tuple[str, str]]
    ) -> None:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for d in upserts:
                    values = (
                        d.kind,
                        d.name,
                        d.version,
                        json.dumps(d.spec, default=str),
                        json.dumps(d.meta),
                        d.applied_at,
                    )
                    db.execute(
                        "INSERT OR REPLACE INTO definitions VALUES (?, ?, ?, ?, ?, ?)", values
                    )
                    db.execute(
                        "INSERT INTO definition_history VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (*values, "apply"),
                    )
                for kind, name in removals:
                    db.execute(
                        "INSERT INTO definition_history SELECT kind, name, version, spec, meta, "
                        "applied_at, 'remove' FROM definitions WHERE kind = ? AND name = ?",
                        (kind, name),
                    )
                    db.execute("DELETE FROM definitions WHERE kind = ? AND name = ?", (kind, name))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def history(self, kind: str, name: str) -> list[RegisteredDefinition]:
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, name, version, spec, meta, applied_at FROM definition_history "
                "WHERE kind = ? AND name = ? AND action = 'apply' ORDER BY rowid",
                (kind, name),
            ).fetchall()
        return [_row(r) for r in rows]

    def get_records(
        self, collection: str, ids: Sequence[str] | None = None, prefix: str | None = None
    ) -> dict[str, dict[str, Any]]:
        with self._lock:
            if prefix:  # a range of the primary key (BINARY collation: byte order)
                rows = self._db.execute(
                    "SELECT id, doc FROM records WHERE collection = ? AND id >= ? AND id < ? "
                    "ORDER BY rowid",
                    (collection, prefix, _after(prefix)),
                ).fetchall()
                if ids is not None:
                    chosen = set(ids)
                    rows = [r for r in rows if r[0] in chosen]
            elif ids is None:
                rows = self._db.execute(
                    "SELECT id, doc FROM records WHERE collection = ? ORDER BY rowid",
                    (collection,),
                ).fetchall()
            else:
                rows = []
                wanted = list(dict.fromkeys(ids))
                for i in range(0, len(wanted), 500):
                    chunk = wanted[i : i + 500]
                    rows += self._db.execute(
                        f"SELECT id, doc FROM records WHERE collection = ? AND id IN "
                        f"({','.join('?' * len(chunk))}) ORDER BY rowid",
                        (collection, *chunk),
                    ).fetchall()
        return {i: json.loads(doc) for i, doc in rows}

    def add_records(
        self, collection: str, records: Sequence[tuple[str, dict[str, Any]]]
    ) -> dict[str, dict[str, Any]]:
        rows = [(collection, i, json.dumps(doc)) for i, doc in records]  # fails before writing
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR IGNORE INTO records VALUES (?, ?, ?)", rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return self.get_records(collection, [i for i, _ in records])

    def delete_records(self, collection: str, ids: Sequence[str]) -> int:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                gone = sum(
                    db.execute(
                        "DELETE FROM records WHERE collection = ? AND id = ?", (collection, i)
                    ).rowcount
                    for i in dict.fromkeys(ids)
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return gone

    def put_records(self, records: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        rows = [(c, i, json.dumps(doc)) for c, i, doc in records]  # fails before writing
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO records VALUES (?, ?, ?) ON CONFLICT (collection, id) "
                    "DO UPDATE SET doc = excluded.doc",
                    rows,
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _row(r: tuple) -> RegisteredDefinition:  # type: ignore[type-arg]
    return RegisteredDefinition(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5])


def _after(prefix: str) -> str:
    """The least string greater than every string starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
