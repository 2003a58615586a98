"""Entities: what predictions are about, identified by one or more key fields."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from headwater.definitions.base import Definition, check_name
from headwater.errors import DefinitionError


class Entity(Definition):
    """A thing with features, such as a user or an item.

    >>> Entity("user", keys="user_id", owner="growth", description="A shopper").keys
    ('user_id',)
    """

    kind = "entity"

    def __init__(
        self,
        name: str,
        *,
        keys: str | Sequence[str],
        owner: str | None = None,
        description: str | None = None,
        deprecated: bool = False,
        tags: Sequence[str] = (),
    ) -> None:
        self._init_common(name, owner, description, deprecated, tuple(tags))
        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)
        if not self.keys:
            raise DefinitionError(f"entity {name!r} needs at least one key")
        for k in self.keys:
            check_name("key", k)

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "keys": list(self.keys)}
