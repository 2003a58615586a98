"""The embedded online store: SQLite in WAL mode, states and checkpoints in one transaction."""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from headwater.stores.online.base import OwnershipLost, owned_by
from headwater.stores.sqlite_file import open_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS states (
    feature_set TEXT NOT NULL, key TEXT NOT NULL, state BLOB NOT NULL,
    PRIMARY KEY (feature_set, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS owners (name TEXT PRIMARY KEY, token TEXT NOT NULL);
"""
_CHUNK = 400
_SETS_SQL: dict[int, str] = {}  # statement text by number of pairs, built once
_ONE_SQL: dict[int, str] = {}  # one key in N feature sets, by N


class SqliteOnlineStore:
    """Feature-set states in a local SQLite file.

    Writes, claims and clears are SQLite transactions (``BEGIN IMMEDIATE``), so several
    processes may share the file: a fenced write compares the owners inside its transaction.
    """

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = open_sqlite(path, _SCHEMA, "NORMAL")
        self._writes = 0  # this connection's write transactions
        # the -shm file, kept open: closed with the store, or when it is collected
        self._wal_index = _open_wal_index(Path(path))
        self._wal_closer = (
            None if self._wal_index is None else weakref.finalize(self, os.close, self._wal_index)
        )

    def change_mark(self) -> tuple[bytes | int, int]:
        """The WAL-index header (the first 48 bytes of the ``-shm`` file, which every
        commit of any connection rewrites: its ``iChange`` counter, last frame and
        checksums; sqlite.org/walformat.html) and this connection's own write count, read
        without a statement or a lock: one ``pread``, about a microsecond. A read that
        overlaps a commit may see a mix of both headers: another mark, so the states are
        read again. Where the file cannot be opened, SQLite's ``data_version`` (a
        statement: 3-6 µs)."""
        fd = self._wal_index
        if fd is not None:
            return os.pread(fd, _WAL_HEADER, 0), self._writes
        with self._lock:
            (version,) = self._db.execute("PRAGMA data_version").fetchone()
            return int(version), self._writes

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

    def get_sets(self, wanted: Mapping[str, Sequence[str]]) -> dict[str, list[bytes | None]]:
        one = _one_key(wanted)
        if one is not None:
            return self._get_one(one, list(wanted))
        pairs = [(fs, k) for fs, keys in wanted.items() for k in dict.fromkeys(keys)]
        found: dict[tuple[str, str], bytes] = {}
        with self._lock:
            for i in range(0, len(pairs), _CHUNK):
                chunk = pairs[i : i + _CHUNK]
                sql = _SETS_SQL.get(len(chunk))
                if sql is None:
                    marks = ",".join(["(?, ?)"] * len(chunk))
                    # a join, not ``(a, b) IN (VALUES ...)``: SQLite scans the table for that
                    sql = _SETS_SQL[len(chunk)] = (
                        f"SELECT s.feature_set, s.key, s.state FROM (VALUES {marks}) AS w "
                        "JOIN states AS s ON s.feature_set = w.column1 AND s.key = w.column2"
                    )
                params = [x for pair in chunk for x in pair]
                for fs, key, state in self._db.execute(sql, params).fetchall():
                    found[(fs, key)] = state
        return {fs: [found.get((fs, k)) for k in keys] for fs, keys in wanted.items()}

    def _get_one(self, key: str, feature_sets: list[str]) -> dict[str, list[bytes | None]]:
        """One entity's state in each feature set (a request for one entity, the serving
        path's common case): one primary-key probe per set in one statement, half the time
        of the general join."""
        sql = _ONE_SQL.get(len(feature_sets))
        if sql is None:
            marks = ",".join("?" * len(feature_sets))
            sql = _ONE_SQL[len(feature_sets)] = (
                f"SELECT feature_set, state FROM states WHERE key = ? AND feature_set IN ({marks})"
            )
        with self._lock:
            found = dict(self._db.execute(sql, (key, *feature_sets)).fetchall())
        return {fs: [found.get(fs)] for fs in feature_sets}

    def write(
        self,
        states: Mapping[str, Mapping[str, bytes]],
        checkpoints: Mapping[str, int],
        owners: Mapping[str, str] | None = None,
    ) -> None:
        with self._transaction() as db:
            if owners:
                _check_owners(db, owners)
            for feature_set, values in states.items():
                db.executemany(
                    "INSERT OR REPLACE INTO states VALUES (?, ?, ?)",
                    [(feature_set, k, v) for k, v in values.items()],
                )
            db.executemany(
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?)", list(checkpoints.items())
            )

    def claim(self, names: Sequence[str], token: str) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO owners VALUES (?, ?)", [(n, token) for n in names]
            )

    def clear(self, feature_sets: Sequence[str]) -> None:
        with self._transaction() as db:
            db.executemany("DELETE FROM states WHERE feature_set = ?", [(f,) for f in feature_sets])
            for table in ("checkpoints", "owners"):
                names = [n for (n,) in db.execute(f"SELECT name FROM {table}").fetchall()]
                db.executemany(
                    f"DELETE FROM {table} WHERE name = ?",
                    [(n,) for n in names if owned_by(n, feature_sets)],
                )

    def delete(self, states: Mapping[str, Sequence[str]]) -> int:
        pairs = [(fs, k) for fs, keys in states.items() for k in dict.fromkeys(keys)]
        with self._transaction() as db:
            return sum(
                db.execute("DELETE FROM states WHERE feature_set = ? AND key = ?", pair).rowcount
                for pair in pairs
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``BEGIN IMMEDIATE`` takes the file's write lock at once, so
        what it reads (the owners) cannot change before it commits."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._writes += 1
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def checkpoints(self, names: Sequence[str]) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT name, offset FROM checkpoints").fetchall()
        wanted = set(names)
        return {n: o for n, o in rows if n in wanted}

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._wal_closer is not None:
                self._wal_closer()  # once: a finalizer runs at most once
                self._wal_closer = self._wal_index = None


_WAL_HEADER = 48  # bytes of the WAL-index header's first copy


def _open_wal_index(path: Path) -> int | None:
    """The ``-shm`` file, opened for reading (None where there is none: a file system
    without shared memory). Read, not mapped: a map of a file that shrinks under it would
    kill the process (SIGBUS); a read of it only answers another mark. SQLite shrinks or
    removes that file only when no connection has the database open, and this store's
    stays open while the descriptor lives."""
    try:
        return os.open(f"{path}-shm", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _check_owners(db: sqlite3.Connection, owners: Mapping[str, str]) -> None:
    """Inside a write's transaction: refuse it unless each name still has the given owner."""
    names = list(owners)
    found: dict[str, str] = {}
    for i in range(0, len(names), _CHUNK):
        chunk = names[i : i + _CHUNK]
        marks = ",".join("?" * len(chunk))
        found.update(
            db.execute(f"SELECT name, token FROM owners WHERE name IN ({marks})", chunk).fetchall()
        )
    lost = sorted(n for n, token in owners.items() if found.get(n) != token)
    if lost:
        raise OwnershipLost(
            f"another processor claimed {', '.join(map(repr, lost))} since this one did; "
            "nothing of this write was applied"
        )


def _one_key(wanted: Mapping[str, Sequence[str]]) -> str | None:
    """The key, when ``wanted`` asks for exactly one and the same key in every set."""
    key = None
    for keys in wanted.values():
        if len(keys) != 1 or (key is not None and keys[0] != key):
            return None
        key = keys[0]
    return key
