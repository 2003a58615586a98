"""The embedded online store: SQLite in WAL mode, states and checkpoints in one transaction."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from headwater.stores.sqlite_file import open_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS states (
    feature_set TEXT NOT NULL, key TEXT NOT NULL, state BLOB NOT NULL,
    PRIMARY KEY (feature_set, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, offset INTEGER NOT NULL);
"""
_CHUNK = 500


class SqliteOnlineStore:
    """Feature-set states in a local SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = open_sqlite(path, _SCHEMA, "NORMAL")

    def get_many(self, feature_set: str, keys: Sequence[str]) -> list[bytes | None]:
        found: dict[str, bytes] = {}
        with self._lock:
            for i in range(0, len(keys), _CHUNK):
                chunk = list(keys[i : i + _CHUNK])
                marks = ",".join("?" * len(chunk))
                found.update(
                    self._db.execute(
                        f"SELECT key, state FROM states WHERE feature_set = ? AND key IN ({marks})",
                        (feature_set, *chunk),
                    ).fetchall()
                )
        return [found.get(k) for k in keys]

    def write(
        self, states: Mapping[str, Mapping[str, bytes]], checkpoints: Mapping[str, int]
    ) -> None:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for feature_set, values in states.items():
                    db.executemany(
                        "INSERT OR REPLACE INTO states VALUES (?, ?, ?)",
                        [(feature_set, k, v) for k, v in values.items()],
                    )
                db.executemany(
                    "INSERT OR REPLACE INTO checkpoints VALUES (?, ?)", list(checkpoints.items())
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def checkpoints(self, names: Sequence[str]) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT name, offset FROM checkpoints").fetchall()
        wanted = set(names)
        return {n: o for n, o in rows if n in wanted}

    def close(self) -> None:
        with self._lock:
            self._db.close()
