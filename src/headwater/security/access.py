"""Access control of one project: who a key is, and whether it may do a thing to a definition.

The owners come from the definitions (every stream, feature, model and service has one); a
``TEAM:*`` scope grants what TEAM owns, a ``feedback:STREAM`` scope grants ingest into a stream
that carries ground truth (a service's feedback stream or a label's stream), nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from headwater.errors import HeadwaterError, did_you_mean
from headwater.security.keys import ApiKey, KeyManagementError, KeyStore
from headwater.security.scopes import ACTIONS, Permission, Scope, granted, parse_scope


class Forbidden(HeadwaterError):
    """A valid key without the scope a request needs."""


class AccessControl:
    """Authenticates tokens (``keys``) and authorizes permissions against ``owners``."""

    def __init__(
        self,
        keys: KeyStore,
        owners: Mapping[tuple[str, str], str],
        feedback_streams: Iterable[str],
    ) -> None:
        self.keys = keys
        self._owners = dict(owners)
        self._feedback = frozenset(feedback_streams)

    def owner_of(self, kind: str, name: str) -> str | None:
        return self._owners.get((kind, name))

    def authenticate(self, token: str) -> ApiKey:
        return self.keys.verify(token)

    def allows(self, key: ApiKey, permission: Permission) -> bool:
        scopes: Sequence[Scope] = key.scopes
        if permission.action == "ingest" and permission.resource not in self._feedback:
            scopes = [s for s in scopes if s.action != "feedback"]
        return granted(scopes, permission, self.owner_of)

    def check_scopes(self, scopes: Sequence[str]) -> list[Scope]:
        """Parse scopes for a new key, refusing names no definition has (a typo would make a
        key that silently grants nothing) and feedback scopes on streams without ground truth."""
        parsed = [parse_scope(s) for s in scopes]
        for scope in parsed:
            kind = ACTIONS.get(scope.action)
            if scope.team is not None:
                teams = set(self._owners.values())
                if scope.team not in teams:
                    raise KeyManagementError(
                        f"scope {scope}: no definition is owned by {scope.team!r}"
                        + did_you_mean(scope.team, sorted(teams))
                    )
            elif kind is not None and scope.resource is not None:
                names = sorted(n for k, n in self._owners if k == kind)
                if scope.resource not in names:
                    raise KeyManagementError(
                        f"scope {scope}: unknown {kind} {scope.resource!r}"
                        + did_you_mean(scope.resource, names)
                    )
                if scope.action == "feedback" and scope.resource not in self._feedback:
                    raise KeyManagementError(
                        f"scope {scope}: stream {scope.resource!r} carries no ground truth "
                        f"(feedback streams: {', '.join(sorted(self._feedback)) or 'none'}); "
                        f"use ingest:{scope.resource}"
                    )
        return parsed
