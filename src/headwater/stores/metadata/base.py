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
    (runs, model versions, aliases); ``put_records`` writes all of its records atomically.
    """

    def definitions(self) -> list[RegisteredDefinition]: ...

    def apply(
        self, upserts: Sequence[RegisteredDefinition], removals: Sequence[tuple[str, str]]
    ) -> None: ...

    def history(self, kind: str, name: str) -> list[RegisteredDefinition]: ...

    def get_records(self, collection: str) -> dict[str, dict[str, Any]]: ...

    def put_records(self, records: Sequence[tuple[str, str, dict[str, Any]]]) -> None: ...

    def close(self) -> None: ...
