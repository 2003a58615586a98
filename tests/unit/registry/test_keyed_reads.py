"""Registry lookups of one record read that record alone (a keyed read), so their cost does
not grow with the number of models and versions; the serving processes refresh every alias
they serve in one read, from a thread of their own."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from headwater.registry.registry import ALIASES, VERSIONS, Registry
from headwater.stores.metadata.sqlite import SqliteMetadataStore


class Spy:
    """A metadata store that records every ``get_records`` call: (collection, ids, thread)."""

    def __init__(self, store: SqliteMetadataStore) -> None:
        self.store = store
        self.calls: list[tuple[str, list[str] | None, str]] = []
        self.prefixes: list[str | None] = []

    def get_records(
        self, collection: str, ids: Sequence[str] | None = None, prefix: str | None = None
    ) -> dict[str, dict[str, Any]]:
        thread = threading.current_thread().name
        self.calls.append((collection, None if ids is None else list(ids), thread))
        self.prefixes.append(prefix)
        return self.store.get_records(collection, ids, prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_one_version_or_alias_is_one_keyed_read(tmp_path: Path) -> None:
    spy = Spy(SqliteMetadataStore(tmp_path / "metadata.db"))
    records = [
        (VERSIONS, f"{m}:{v}", {"model": m, "version": v, "metrics": {}, "pad": "x" * 2000})
        for m in ("a", "b", "c")
        for v in range(1, 41)
    ]
    records += [(ALIASES, f"{m}:champion", {"version": 40, "history": []}) for m in "abc"]
    spy.put_records(records)
    registry = Registry(spy)  # type: ignore[arg-type]
    spy.calls.clear()

    assert registry.version("b", 17)["version"] == 17
    assert registry.version("c", "champion")["version"] == 40
    assert registry.alias("a", "champion") == 40
    assert registry.alias("a", "shadow") is None
    pairs = [("a", "champion"), ("b", "champion"), ("c", "champion"), ("c", "nope")]
    assert registry.alias_versions(pairs) == {p: 40 for p in pairs[:3]}

    assert spy.calls, "no reads recorded"
    for collection, ids, _ in spy.calls:
        assert ids is not None and len(ids) <= 4, (collection, ids)  # never the collection
    assert len([c for c in spy.calls if c[1] == [f"{m}:{a}" for m, a in pairs]]) == 1


def test_a_models_versions_and_aliases_read_its_range_only(tmp_path: Path) -> None:
    """``versions(model)`` and ``aliases(model)`` read the ids starting with ``model:`` (not
    ``model10:``, nor another model's), through the index, never the whole collection."""
    spy = Spy(SqliteMetadataStore(tmp_path / "metadata.db"))
    names = ("m1", "m10", "m_1", "m%1", "m2")
    spy.put_records(
        [(VERSIONS, f"{m}:{v}", {"model": m, "version": v}) for m in names for v in (1, 2, 10)]
        + [(ALIASES, f"{m}:{a}", {"version": 2}) for m in names for a in ("champion", "b")]
    )
    registry = Registry(spy)  # type: ignore[arg-type]
    spy.calls.clear()
    for m in names:
        assert [d["version"] for d in registry.versions(m)] == [1, 2, 10]
        assert {d["model"] for d in registry.versions(m)} == {m}
        assert set(registry.aliases(m)) == {"champion", "b"}
    assert spy.prefixes == [f"{m}:" for m in names for _ in range(3)]
