"""405 for a method no documented operation of a path accepts, with ``Allow`` listing every
method the path does accept (Starlette's own answer names only the first route's, and a path
such as ``/v1/features`` has a GET and a POST route). The table comes from the OpenAPI
document, so what is refused here is exactly what the document leaves out."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson


class Methods:
    """ASGI middleware in front of the guards: a refused method never reaches them."""

    def __init__(self, app: Any, document: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self._document = document  # the OpenAPI document, read at the first request
        self._table: list[tuple[re.Pattern[str], frozenset[str]]] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            allowed = self._allowed(scope["path"])
            if allowed is not None and scope["method"] not in allowed:
                await _refuse(send, scope["method"], allowed)
                return
        await self.app(scope, receive, send)

    def _allowed(self, path: str) -> frozenset[str] | None:
        if self._table is None:
            self._table = []
            for template, operations in self._document().get("paths", {}).items():
                methods = {m.upper() for m in operations}
                if "GET" in methods:
                    methods.add("HEAD")
                regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
                self._table.append((re.compile(f"^{regex}$"), frozenset(methods)))
        found: set[str] = set()
        matched = False
        for pattern, accepted in self._table:
            if pattern.match(path):
                matched = True
                found |= accepted
        return frozenset(found) if matched else None


async def _refuse(send: Any, method: str, allowed: frozenset[str]) -> None:
    body = orjson.dumps(
        {"detail": f"method {method} is not allowed here", "error": "MethodNotAllowed"}
    )
    await send(
        {
            "type": "http.response.start",
            "status": 405,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"allow", ", ".join(sorted(allowed)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
