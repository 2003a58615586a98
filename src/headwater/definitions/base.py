"""What every definition has: a checked name, an owner, a description, a content hash."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from headwater.errors import DefinitionError

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_QUALIFIED = re.compile(r"^([a-z][a-z0-9_]*\.)?[a-z][a-z0-9_]*$")  # a feature's: "growth.visits_7d"


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise DefinitionError(
            f"{kind} name {name!r} is not valid; use lowercase letters, digits and '_', "
            "starting with a letter"
        )
    return name


def check_feature_name(name: str) -> str:
    """A feature output's name, with its team's namespace if it has one
    (``growth.sessions_7d``)."""
    if not isinstance(name, str) or not _QUALIFIED.match(name):
        raise DefinitionError(
            f"feature name {name!r} is not valid; use lowercase letters, digits and '_', "
            "starting with a letter, after a namespace and a dot if the feature has one "
            "(growth.sessions_7d)"
        )
    return name


def check_ownership(kind: str, name: str, owner: str | None, description: str | None) -> None:
    missing = [w for w, v in (("owner", owner), ("description", description)) if not v]
    if missing:
        raise DefinitionError(
            f"{kind} {name!r} has no {' and no '.join(missing)}; every definition needs an "
            f"owner (a team or person to ask) and a description, e.g. "
            f'{kind.capitalize()}({name!r}, ..., owner="growth@shop", description="...")'
        )


def content_hash(spec: Any) -> str:
    """A short, stable hash of a JSON-able spec: the version of a definition."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Definition:
    """Shared behaviour of Stream, Entity, Feature and Derived."""

    kind: str = "definition"
    name: str
    owner: str
    description: str
    deprecated: bool
    tags: tuple[str, ...]
    namespace: str | None = None  # a feature's team namespace (``growth`` of growth.visits)

    def _init_common(
        self,
        name: str,
        owner: str | None,
        description: str | None,
        deprecated: bool,
        tags: tuple[str, ...] | list[str],
        namespace: str | None = None,
    ) -> None:
        self.name = check_name(self.kind, name)
        if namespace is not None:  # a team's namespace: two teams may use one short name
            self.name = f"{check_name('namespace', namespace)}.{self.name}"
        self.namespace = namespace
        check_ownership(self.kind, self.name, owner, description)
        self.owner = str(owner)
        self.description = str(description)
        self.deprecated = bool(deprecated)
        self.tags = tuple(tags)

    def spec(self) -> dict[str, Any]:
        """The semantic content: a change here changes the version."""
        raise DefinitionError(f"{type(self).__name__} must define spec()")

    @property
    def version(self) -> str:
        return content_hash(self.spec())

    def meta(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "description": self.description,
            "deprecated": self.deprecated,
            "tags": list(self.tags),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, version={self.version!r})"
