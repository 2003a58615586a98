"""What an API key may do: the scope grammar, and whether a set of scopes grants an action.

Grammar (one scope per ``--scope``)::

    admin                         everything, including key management
    ingest:STREAM                 POST events into STREAM       (ingest:* for every stream)
    feedback:STREAM               POST ground truth into STREAM, a service's feedback stream
                                  or a label's stream (feedback:* for all of them)
    features:read[:FEATURE]       read online features (of the feature definition FEATURE)
    predict:SERVICE               call SERVICE                  (predict:* for every service)
    models:promote[:MODEL]        move a model's aliases (promote, roll back)
    alerts:ack                    acknowledge monitoring alerts
    TEAM:*                        everything TEAM owns (its streams, features, models, services)

>>> granted([parse_scope("ingest:clicks")], Permission("ingest", "clicks"), lambda k, n: None)
True
>>> granted([parse_scope("growth:*")], Permission("predict", "churn"), lambda k, n: "growth")
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from headwater.errors import HeadwaterError

# action -> the kind of definition its resource names (None: the action takes no resource)
ACTIONS: dict[str, str | None] = {
    "admin": None,
    "ingest": "stream",
    "feedback": "stream",
    "features:read": "feature",
    "predict": "service",
    "models:promote": "model",
    "alerts:ack": None,
}
# actions whose resource may be left out (granting every resource)
OPTIONAL_RESOURCE = {"features:read", "models:promote"}
GRAMMAR = (
    "admin | ingest:STREAM | feedback:STREAM | features:read[:FEATURE] | predict:SERVICE | "
    "models:promote[:MODEL] | alerts:ack | TEAM:*  (STREAM, SERVICE may be *)"
)

OwnerOf = Callable[[str, str], str | None]  # (kind, name) -> the owning team, None if unknown


class ScopeError(HeadwaterError, ValueError):
    """A scope that does not follow the grammar."""


@dataclass(frozen=True)
class Scope:
    """One parsed scope. ``resource`` None grants every resource of the action; ``team`` set
    means ``TEAM:*``."""

    action: str
    resource: str | None = None
    team: str | None = None

    def __str__(self) -> str:
        if self.team is not None:
            return f"{self.team}:*"
        if self.resource is not None:
            return f"{self.action}:{self.resource}"
        needs_one = ACTIONS[self.action] is not None and self.action not in OPTIONAL_RESOURCE
        return f"{self.action}:*" if needs_one else self.action


@dataclass(frozen=True)
class Permission:
    """What a request needs: an action on a resource (a definition's name, or None)."""

    action: str
    resource: str | None = None


def parse_scope(text: str) -> Scope:
    """Parse one scope; ``ScopeError`` with the grammar when it does not follow it.

    >>> parse_scope("features:read"), str(parse_scope("predict:*"))
    (Scope(action='features:read', resource=None, team=None), 'predict:*')
    """
    if not text or any(c.isspace() or ord(c) < 32 for c in text):
        raise ScopeError(f"invalid scope {text!r}; scopes are {GRAMMAR}")
    if text in ACTIONS:
        if ACTIONS[text] is not None and text not in OPTIONAL_RESOURCE:
            raise ScopeError(f"scope {text!r} needs a {ACTIONS[text]}: {text}:NAME (or {text}:*)")
        return Scope(text)
    for action, kind in ACTIONS.items():
        if kind is not None and text.startswith(action + ":"):
            resource = text[len(action) + 1 :]
            if not resource or ":" in resource:
                raise ScopeError(f"invalid scope {text!r}; scopes are {GRAMMAR}")
            return Scope(action, None if resource == "*" else resource)
    team, sep, rest = text.rpartition(":")
    if sep and team and rest == "*":
        return Scope("team", team=team)
    raise ScopeError(f"unknown scope {text!r}; scopes are {GRAMMAR}")


def granted(scopes: Iterable[Scope], permission: Permission, owner_of: OwnerOf) -> bool:
    """Whether any of ``scopes`` allows ``permission``. A ``feedback`` scope grants ``ingest``
    into its stream (the caller checks, at key creation, that the stream takes feedback)."""
    return any(_grants(s, permission, owner_of) for s in scopes)


def _grants(scope: Scope, permission: Permission, owner_of: OwnerOf) -> bool:
    if scope.action == "admin":
        return True
    if scope.team is not None:
        kind = ACTIONS.get(permission.action)
        if permission.action == "alerts:ack" or kind is None or permission.resource is None:
            return False
        return owner_of(kind, permission.resource) == scope.team
    action = scope.action
    if action == "feedback" and permission.action == "ingest":
        action = "ingest"
    if action != permission.action:
        return False
    return scope.resource is None or scope.resource == permission.resource


def may_use_some(scopes: Iterable[Scope], action: str) -> bool:
    """Whether the scopes could allow ``action`` on some resource (a cheap first check of a
    request whose resources are in its body)."""
    return any(s.action in ("admin", "team", action) for s in scopes)
