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
    """Registered definitions; ``apply`` is atomic, and every version ever applied is kept."""

    def definitions(self) -> list[RegisteredDefinition]: ...

    def apply(
        self, upserts: Sequence[RegisteredDefinition], removals: Sequence[tuple[str, str]]
    ) -> None: ...

    def history(self, kind: str, name: str) -> list[RegisteredDefinition]: ...

    def close(self) -> None: ...
