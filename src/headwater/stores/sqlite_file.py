"""Opening the embedded stores' SQLite files the one way they all need."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_sqlite(
    path: str | Path, schema: str, synchronous: str = "NORMAL", mmap_bytes: int = 0
) -> sqlite3.Connection:
    """A WAL-mode connection in autocommit mode, shareable between threads (callers hold a
    lock), with ``schema`` applied. ``synchronous=FULL`` where a commit must survive power
    loss (the log); NORMAL survives a process crash, which is what derived stores need.
    ``mmap_bytes``: read the first bytes of the file through a memory map instead of a
    ``pread`` per page (the online store's point reads: a fifth less time each)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    if mmap_bytes:
        db.execute(f"PRAGMA mmap_size={int(mmap_bytes)}")
    db.executescript(schema)
    return db
