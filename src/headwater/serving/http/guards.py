"""The request guards, in front of every route (the hot fast paths included): the ``Host``
header, the ``Origin`` of browser requests, the content type of writes, the API key and its
scope, and the key's rate limit. Each refusal is a JSON ``{"detail", "error"}`` answer.

Public without a key: ``PUBLIC_PATHS`` and anything under ``PUBLIC_PREFIXES`` (the docs and
their assets, the UI's login page and static files); ``/metrics`` too when ``metrics_public``.
A browser carries its key in the UI's session cookie (``UI_COOKIE``, set by ``/ui/session``);
a write authenticated by that cookie must come from a page of this server (an ``Origin``
header naming it), so no other site can make a browser promote a model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from headwater.security.access import AccessControl
from headwater.security.keys import ApiKey, Unauthenticated
from headwater.security.limits import RateLimits
from headwater.security.scopes import Permission, may_use_some

PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/v2/health/live"}
    | {"/v2/health/ready"}
    | {"/ui/login", "/ui/session", "/ui/logout"}
)
PUBLIC_PREFIXES = ("/assets/", "/ui/assets/")
UI_COOKIE = "headwater_key"  # the API key of a browser session (HttpOnly, SameSite=Strict)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ANY_KEY = Permission("any")  # any valid key will do (listing models, metrics, unknown routes)


@dataclass(frozen=True)
class GuardSettings:
    """What the guards allow; ``access`` None means auth is off (loopback development)."""

    allowed_hosts: frozenset[str]
    allowed_origins: frozenset[str]
    access: AccessControl | None = None
    metrics_public: bool = False
    rate_limits: RateLimits | None = None


@functools.lru_cache(maxsize=1024)  # a server's routes repeat: parsed once each
def permission_of(method: str, path: str) -> Permission:
    """What a request needs. Feature reads need some ``features:read`` scope here and one for
    each feature's definition in the route (the names are in the body)."""
    parts = path.strip("/").split("/")
    if method == "POST" and len(parts) == 3 and parts[:2] == ["v1", "events"]:
        return Permission("ingest", parts[2])
    if method == "POST" and len(parts) == 3 and parts[:2] == ["v1", "predict"]:
        return Permission("predict", parts[2])
    if method == "POST" and parts[:2] == ["v2", "models"] and parts[-1] == "infer":
        return Permission("predict", parts[2])  # .../{name}[/versions/{version}]/infer
    if parts == ["v1", "features"]:
        return Permission("features:read")
    if (
        method == "POST"
        and len(parts) == 5
        and parts[:2] == ["v1", "models"]
        and parts[3] == "aliases"
    ):
        return Permission("models:promote", parts[2])
    if (
        method == "POST"
        and len(parts) == 4
        and parts[0:2] == ["v1", "alerts"]
        and parts[3] == "ack"
    ):
        return Permission("alerts:ack")
    return ANY_KEY


class Guards:
    """ASGI middleware: refuses what the settings do not allow, passes everything else on with
    the verified key in ``scope["state"]["api_key"]``."""

    def __init__(self, app: Any, settings: GuardSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":  # no route speaks it
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.check(scope)
        if refusal is not None:
            await refuse(send, *refusal)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Any) -> tuple[int, str, str, list[tuple[bytes, bytes]]] | None:
        """(status, error, reason, extra headers) of a refusal, or None to let it through."""
        headers = _headers(scope)
        host = headers.get("host", "")
        if not self._host_allowed(host):
            return 400, "HostNotAllowed", f"host {_clean(host)!r} is not served here", []
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, host, scope):
            return 403, "OriginNotAllowed", f"origin {_clean(origin)!r} is not allowed", []
        method, path = scope.get("method", "GET"), scope.get("path", "")
        if method in WRITE_METHODS:
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/json":
                reason = "send the body as JSON with the header content-type: application/json"
                return 415, "UnsupportedMediaType", reason, []
        access = self.settings.access
        if access is None or self._public(path):
            return None
        return self._authorize(access, scope, headers, method, path)

    def _authorize(
        self,
        access: AccessControl,
        scope: Any,
        headers: dict[str, str],
        method: str,
        path: str,
    ) -> tuple[int, str, str, list[tuple[bytes, bytes]]] | None:
        challenge = [(b"www-authenticate", b'Bearer realm="headwater"')]
        token, from_cookie = _token(headers)
        page = method == "GET" and (path == "/ui" or path.startswith("/ui/"))
        if token is None:
            if page:  # a person at a browser: ask for the key
                return 303, "Unauthenticated", "sign in", [(b"location", _login(scope))]
            reason = "an API key is required: send the header authorization: Bearer <key>"
            return 401, "Unauthenticated", reason, challenge
        try:
            key = access.authenticate(token)
        except Unauthenticated as exc:
            if page:
                return 303, "Unauthenticated", str(exc), [(b"location", _login(scope))]
            return 401, "Unauthenticated", str(exc), challenge
        if from_cookie and method in WRITE_METHODS and "origin" not in headers:
            reason = "a write signed in by the UI's cookie must come from the UI (no Origin)"
            return 403, "OriginNotAllowed", reason, []
        permission = permission_of(method, path)
        if not _allowed(access, key, permission):
            return 403, "Forbidden", _forbidden(key, permission), []
        limits = self.settings.rate_limits
        if limits is not None:
            wait = limits.take(key.id)
            if wait > 0:
                retry = str(max(1, round(wait + 0.499))).encode()
                reason = f"key {key.id} is over its rate limit of {limits.rate:g} requests/s"
                return 429, "RateLimited", reason, [(b"retry-after", retry)]
        scope.setdefault("state", {})["api_key"] = key
        return None

    def _public(self, path: str) -> bool:
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return True
        return path == "/metrics" and self.settings.metrics_public

    def _host_allowed(self, host: str) -> bool:
        allowed = self.settings.allowed_hosts
        return "*" in allowed or _hostname(host) in allowed

    def _origin_allowed(self, origin: str, host: str, scope: Any) -> bool:
        allowed = self.settings.allowed_origins
        if "*" in allowed or origin.rstrip("/") in allowed:
            return True
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        return origin == f"{scheme}://{host}"  # the server's own pages (same origin)


def _allowed(access: AccessControl, key: ApiKey, permission: Permission) -> bool:
    if permission is ANY_KEY:
        return True
    if permission.resource is None and permission.action == "features:read":
        return may_use_some(key.scopes, "features:read")  # per feature in the route
    return access.allows(key, permission)


def _forbidden(key: ApiKey, permission: Permission) -> str:
    need = permission.action + (f":{permission.resource}" if permission.resource else "")
    return f"key {key.id} of team {key.team!r} lacks the scope {need}"


def _token(headers: dict[str, str]) -> tuple[str | None, bool]:
    """The request's key, and whether it came from the UI's cookie."""
    value = headers.get("authorization")
    if value is not None:
        scheme, _, token = value.partition(" ")
        return (token.strip() if scheme.lower() == "bearer" and token.strip() else None), False
    if "x-api-key" in headers:
        return headers["x-api-key"], False
    cookie = ui_cookie(headers.get("cookie", ""))
    return cookie, cookie is not None


def ui_cookie(header: str) -> str | None:
    """The UI's key in a ``Cookie`` header.

    >>> ui_cookie("a=1; headwater_key=hw_abc; b=2"), ui_cookie("a=1")
    ('hw_abc', None)
    """
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == UI_COOKIE and value:
            return value
    return None


def _login(scope: Any) -> bytes:
    """Where a browser without a key goes: the login page, then back to the page it asked."""
    target = scope.get("path", "/ui")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    return ("/ui/login?next=" + quote(target, safe="")).encode("latin-1")


_READ = frozenset([b"host", b"origin", b"content-type", b"authorization", b"x-api-key", b"cookie"])


def _headers(scope: Any) -> dict[str, str]:
    """The headers the guards read (the others are not decoded: a third of the check's time
    on a plain request)."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in _READ or (not name.islower() and name.lower() in _READ):
            found[name.decode("latin-1").lower()] = value.decode("latin-1")
    return found


def _hostname(host: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8800`` -> ``::1``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _clean(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:100])


def refusal_body(error: str, reason: str) -> bytes:
    return orjson.dumps({"detail": reason, "error": error})


async def refuse(
    send: Callable[..., Any], status: int, error: str, reason: str, extra: list[Any]
) -> None:
    body = refusal_body(error, reason)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def caller(state: Any) -> tuple[str, str]:
    """(key id, team) of the request's verified key; ("-", "anonymous") when auth is off."""
    key = getattr(state, "api_key", None)
    return (key.id, key.team) if key is not None else ("-", "anonymous")


def forbidden_features(
    access: AccessControl | None,
    key: ApiKey | None,
    names: list[str],
    definitions: Any,
) -> str | None:
    """Why ``key`` may not read ``names`` (the first feature it lacks), None if it may.
    Unknown names pass here: the lookup answers 404 for them."""
    if access is None or key is None:
        return None
    for name in names:
        owner = definitions.get(name) if definitions is not None else None
        if owner is not None and not access.allows(key, Permission("features:read", owner)):
            return _forbidden(key, Permission("features:read", owner)) + f" (feature {name!r})"
    return None
