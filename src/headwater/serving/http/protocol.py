"""The server's HTTP/1.1 protocol: uvicorn's httptools protocol, with the hot routes answered
inside the parser's own callback and written in one ``write``.

Under plain ASGI a prediction costs uvicorn a task, a request-response cycle, an event, the
receive and send coroutines, a header check per header and two writes (the head, then the
body) — together more CPU than reading the features and calling the model. ``HotProtocol``
takes a request that ``FastPaths.claims`` (``POST /v1/predict/{service}`` and
``POST /v1/features``, no ``Origin``, no ``Expect: 100-continue``, a plain path) and whose
body stays within ``HEAVY_BYTES``: when the body is complete it is answered by
``FastPaths.respond`` (the same guards and answer functions as the ASGI path) and the status
line, headers and body go out together. Everything else — other routes, a larger body (which
the ASGI path answers in the thread pool), a request arriving while an ASGI response is under
way on the same connection — is handed to uvicorn's own handling unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from headwater.serving.http.fastpath import ERROR, FastPaths
from headwater.serving.http.heavy import HEAVY_BYTES

_LOGGER = logging.getLogger("uvicorn.error")
_HEAD = b"content-type: application/json\r\ncontent-length: "


class HotProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` (``uvicorn.Config(http=HotProtocol)``), answering the
    hot routes synchronously when the app is a ``HotApp`` with fast paths."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._app = config.app  # the HotApp itself, not uvicorn's wrapping of it
        self._fast: FastPaths | None = getattr(self._app, "fast_paths", None)
        self._hot: str | None = None  # the service of the hot request being read
        self._body = bytearray()
        self._keep_alive = True
        self._closing = False  # shut down while a hot request was being read

    def on_headers_complete(self) -> None:
        fast = self._fast
        if (
            fast is None
            or self.expect_100_continue
            or (self.cycle is not None and not self.cycle.response_complete)
            or self.parser.should_upgrade()
        ):
            super().on_headers_complete()
            return
        method = self.parser.get_method().decode("ascii")
        if method != "POST":  # no hot route: uvicorn parses the URL, once
            super().on_headers_complete()
            return
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = self.root_path + raw_path.decode("ascii")
        plain = b"%" not in raw_path  # a quoted path takes uvicorn's unquoting
        service = fast.claims(method, path, self.headers) if plain else None
        if service is None:
            super().on_headers_complete()
            return
        version = self.parser.get_http_version()
        scope = self.scope
        scope["method"] = method
        if version != "1.1":
            scope["http_version"] = version
        scope["path"] = path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = url.query or b""
        self._hot, self._body = service, bytearray()
        self._keep_alive = version != "1.0" and self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self._hot is None:
            super().on_body(body)
        elif len(self._body) + len(body) <= HEAVY_BYTES:
            self._body += body
        else:  # a large request: the ASGI path reads it and answers it in the thread pool
            self._hot, read = None, bytes(self._body)
            super().on_headers_complete()
            if read:
                super().on_body(read)
            super().on_body(body)

    def on_message_complete(self) -> None:
        service = self._hot
        if service is None:
            super().on_message_complete()
            return
        self._hot = None
        assert self._fast is not None  # a hot request was claimed by it
        body, self._body = bytes(self._body), bytearray()
        try:
            status, payload, extra = self._fast.respond(self._app, self.scope, service, body)
        except Exception as exc:  # noqa: BLE001 - answered 500 and logged, as uvicorn would
            _LOGGER.error("Exception in ASGI application\n", exc_info=exc)
            status, payload, extra = 500, ERROR, []
        keep_alive = self._keep_alive and not self._closing
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += (name, b": ", value, b"\r\n")
        for name, value in extra:
            head += (name, b": ", value, b"\r\n")
        head += (_HEAD, b"%d\r\n" % len(payload))
        if not keep_alive:
            head.append(b"connection: close\r\n")
        head += (b"\r\n", payload)
        self.transport.write(b"".join(head))
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()

    def shutdown(self) -> None:
        if self._hot is not None:  # answered once its body is in, then the connection closes
            self._closing = True
            return
        super().shutdown()
