"""The hot routes answered before FastAPI's middleware, routing, dependency solving and
exception handling: ``POST /v1/predict/{service}`` and ``POST /v1/features``.

``HotApp.__call__`` hands them to ``FastPaths.answer`` first. It applies the guards itself
(the same ``Guards.check``: host, content type, key, scope, rate limit), reads the body up
to the size limit, calls the same ``answer`` function as the FastAPI route (kept for the
OpenAPI document and tested to answer identically) and sends the answer. A request with an
``Origin`` header (a browser's, which CORS must answer) takes the whole stack.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI

from headwater.serving.http.guards import Guards, refusal_body, refuse
from headwater.serving.http.heavy import answer_off_loop
from headwater.serving.http.routes import features, predict

PREDICT = "/v1/predict/"
FEATURES = "/v1/features"
_JSON = (b"content-type", b"application/json")
ERROR = orjson.dumps({"detail": "internal error: see the server's log", "error": "InternalError"})

Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]  # status, JSON body, extra headers


class HotApp(FastAPI):
    """The server's app: FastAPI, with ``fast_paths`` (when set) answering the hot routes
    before its middleware stack is entered."""

    fast_paths: FastPaths | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        fast = self.fast_paths
        if fast is not None and await fast.answer(self, scope, receive, send):
            return
        await super().__call__(scope, receive, send)


class FastPaths:
    """Answers the hot POST routes; ``answer`` returns False for anything else. ``claims``
    and ``respond`` are the same work without ASGI, for the server's own HTTP protocol
    (``protocol.HotProtocol``), which answers a small request within the callback that
    parsed it, in one write."""

    def __init__(self, guards: Guards) -> None:
        self.guards = guards

    @staticmethod
    def claims(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The service a hot request predicts for ("" for ``/v1/features``), or None when
        the request is not one of the hot routes."""
        if method != "POST":
            return None
        service = path[len(PREDICT) :] if path.startswith(PREDICT) else None
        if not (path == FEATURES or (service and "/" not in service)):
            return None
        if any(name == b"origin" for name, _ in headers):
            return None  # a browser's request: CORS and the rest of the stack answer it
        return service or ""

    def respond(self, app: Any, scope: Any, service: str, body: bytes) -> Answer:
        """(status, JSON body, extra headers) of a hot request whose whole body is read."""
        scope["app"] = app
        refusal = self.guards.check(scope)
        if refusal is not None:
            status, error, reason, extra = refusal
            return status, refusal_body(error, reason), extra
        limit = app.state.services.max_request_bytes
        if len(body) > limit:
            return 413, _too_large(limit), []
        return (*_answer(app, body, scope, service), [])

    async def answer(self, app: Any, scope: Any, receive: Any, send: Any) -> bool:
        if scope["type"] != "http":
            return False
        service = self.claims(scope["method"], scope["path"], scope["headers"])
        if service is None:
            return False
        scope["app"] = app
        refusal = self.guards.check(scope)
        if refusal is not None:
            await refuse(send, *refusal)
            return True
        body = await _body(receive, app.state.services.max_request_bytes)
        if body is None:
            return True  # the client went away
        try:
            if isinstance(body, tuple):
                status, payload = body
            else:
                status, payload = await answer_off_loop(_answer, app, body, scope, service)
        except Exception:
            # as Starlette's error middleware would: a 500 (in JSON here), then the error
            # goes on to the server, which logs it with its traceback
            await _send(send, 500, ERROR)
            raise
        await _send(send, status, payload)
        return True


def _answer(app: Any, body: bytes, scope: Any, service: str) -> tuple[int, bytes]:
    if service:
        return predict.answer(app, service, body)
    return features.answer(app, body, scope.get("state", {}).get("api_key"))


async def _send(send: Any, status: int, payload: bytes) -> None:
    headers = [_JSON, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _too_large(limit: int) -> bytes:
    return orjson.dumps({"detail": f"request body exceeds the limit of {limit} bytes"})


async def _body(receive: Any, limit: int) -> bytes | tuple[int, bytes] | None:
    """The request body; (413, reason) past ``limit`` bytes; None if the client left."""
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return 413, _too_large(limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)
