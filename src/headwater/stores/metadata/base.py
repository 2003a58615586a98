"""The metadata port: registered definitions, their versions and history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class RegisteredDefinition:
    """A definition as the metadata store holds it."""

    kind: str
    name: str
    version: str
    spec: dict[str, Any]
    meta: dict[str, Any]
    applied_at: int = 0


class MetadataStore(Protocol):
    """Registered definitions; ``apply`` is atomic, and every version ever applied is kept.

    Records are JSON documents by (collection, id) for everything else the platform keeps
    (runs, model versions, aliases, wrapped data keys); ``put_records`` writes all of its
    records atomically (replacing documents of the same ids), ``add_records`` adds those whose
    id is new and answers the document each id holds (the first writer's, when two race), and
    ``delete_records`` removes documents and answers how many there were. ``get_records`` with
    ``ids`` reads just those (the ones that exist); with ``prefix``, the ids that start with it
    (an index range: a model's versions, ``"churn:"``, cost the same whatever the models).
    """

    def definitions(self) -> list[RegisteredDefinition]: ...

    def apply(
        self, upserts: Sequence[RegisteredDefinition], removals: Sequence[tuple[str, str]]
    ) -> None: ...

    def history(self, kind: str, name: str) -> list[RegisteredDefinition]: ...

    def get_records(
        self, collection: str, ids: Sequence[str] | None = None, prefix: str | None = None
    ) -> dict[str, dict[str, Any]]: ...

    def put_records(self, records: Sequence[tuple[str, str, dict[str, Any]]]) -> None: ...

    def add_records(
        self, collection: str, records: Sequence[tuple[str, dict[str, Any]]]
    ) -> dict[str, dict[str, Any]]: ...

    def delete_records(self, collection: str, ids: Sequence[str]) -> int: ...

    def close(self) -> None: ...
