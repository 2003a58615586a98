"""The server's HTTP protocol: the hot routes answered in the parser's callback, in one write,
exactly as the ASGI path answers them; everything else (other routes, large bodies, pipelined
requests behind an ASGI response, quoted paths) handed to uvicorn's own handling."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import orjson
import pytest
import uvicorn
from fastapi.testclient import TestClient
from uvicorn.server import ServerState

from headwater.serving.http import fastpath
from headwater.serving.http.heavy import HEAVY_BYTES
from headwater.serving.http.protocol import HotProtocol
from headwater.serving.http.server import serve_in_background
from tests.unit.serving.test_predict import LOCAL, _without_ids, served  # noqa: F401

PREDICT = [
    {"entity": {"user_id": "u7"}},
    {"entities": [{"user_id": "u1"}, {"user_id": "nobody"}]},
    {"entity": {"uid": 1}},
    ["not", "an", "object"],
]
LOOKUP = {"entities": [{"user_id": "u1"}], "features": ["visits_7d"]}


class _Transport:
    """What the protocol writes, and whether it closed the connection."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


@pytest.fixture
def connection(served) -> Iterator[tuple[HotProtocol, _Transport]]:  # noqa: F811
    config = uvicorn.Config(served.app(), http=HotProtocol, log_level="warning")
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Mon, 07 Dec 2026 12:00:00 GMT")]
    loop = asyncio.new_event_loop()
    protocol = HotProtocol(config, state, {}, loop)
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    yield protocol, transport
    protocol.connection_lost(None)
    loop.close()


def _request(path: str, body: object, version: str = "1.1", extra: str = "") -> bytes:
    data = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/{version}\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n{extra}\r\n"
    )
    return head.encode() + data


def _responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Each HTTP/1.1 response in ``data`` (bodies by content-length) in order."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        size = int(headers["content-length"])
        out.append((int(status_line.split()[1]), headers, rest[:size]))
        data = rest[size:]
    return out


def _asgi_answers(served, requests: list[tuple[str, object]]) -> list[tuple[int, bytes]]:  # noqa: F811
    with TestClient(served.app(), base_url=LOCAL) as client:
        return [(r.status_code, r.content) for r in (client.post(u, json=b) for u, b in requests)]


def _comparable(status: int, body: bytes) -> tuple[int, object]:
    return status, _without_ids(orjson.loads(body)) if status == 200 else orjson.loads(body)


def test_each_hot_request_is_answered_in_one_write_as_the_asgi_path_answers(
    served,  # noqa: F811
    connection,
):
    protocol, transport = connection
    requests = [("/v1/predict/risk", b) for b in PREDICT]
    requests += [("/v1/predict/nosuch", PREDICT[0]), ("/v1/features", LOOKUP)]
    for path, body in requests:
        before = len(transport.writes)
        protocol.data_received(_request(path, body))
        assert len(transport.writes) == before + 1  # status line, headers and body at once
    answers = _responses(b"".join(transport.writes))
    expected = _asgi_answers(served, requests)
    assert [_comparable(s, b) for s, _, b in answers] == [_comparable(*e) for e in expected]
    assert [s for s, _, _ in answers] == [200, 200, 422, 422, 404, 200]
    for _, headers, _ in answers:
        assert headers["content-type"] == "application/json"
        assert headers["date"] == "Mon, 07 Dec 2026 12:00:00 GMT"
        assert "connection" not in headers and "server" not in headers
    assert not transport.closed  # kept alive


def test_a_body_in_pieces_is_answered_once_complete_and_http_1_0_closes(connection):
    protocol, transport = connection
    raw = _request("/v1/predict/risk", PREDICT[0])
    for piece in (raw[:30], raw[30:-5], raw[-5:-1]):
        protocol.data_received(piece)
        assert transport.writes == []
    protocol.data_received(raw[-1:])
    ((status, headers, body),) = _responses(b"".join(transport.writes))
    assert status == 200 and len(orjson.loads(body)["predictions"]) == 1
    protocol.data_received(_request("/v1/predict/risk", PREDICT[0], version="1.0"))
    status, headers, _ = _responses(b"".join(transport.writes))[1]
    assert status == 200 and headers["connection"] == "close" and transport.closed


def test_a_failing_answer_is_a_500_in_json_logged_and_the_connection_serves_on(
    connection, monkeypatch, caplog
):
    protocol, transport = connection

    def broken(app: object, service: str, body: bytes) -> tuple[int, bytes]:
        raise RuntimeError("the model fell over")

    monkeypatch.setattr(fastpath.predict, "answer", broken)
    protocol.data_received(_request("/v1/predict/risk", PREDICT[0]))
    monkeypatch.undo()
    protocol.data_received(_request("/v1/predict/risk", PREDICT[0]))
    (first, _, body), (second, _, _) = _responses(b"".join(transport.writes))
    assert (first, orjson.loads(body)["error"], second) == (500, "InternalError", 200)
    assert "the model fell over" in caplog.text
    assert not transport.closed


def test_refusals_come_from_the_same_guards(connection):
    protocol, transport = connection
    wrong_type = _request("/v1/predict/risk", PREDICT[0]).replace(
        b"application/json", b"text/plain"
    )
    protocol.data_received(wrong_type)
    foreign = _request("/v1/predict/risk", PREDICT[0]).replace(b"localhost", b"evil.example")
    protocol.data_received(foreign)
    answers = _responses(b"".join(transport.writes))
    assert [(s, orjson.loads(b)["error"]) for s, _, b in answers] == [
        (415, "UnsupportedMediaType"),
        (400, "HostNotAllowed"),
    ]


def test_a_shutdown_while_a_body_is_read_answers_it_then_closes(connection):
    protocol, transport = connection
    raw = _request("/v1/predict/risk", PREDICT[0])
    protocol.data_received(raw[:-3])
    protocol.shutdown()
    assert not transport.closed  # the request in flight is answered first
    protocol.data_received(raw[-3:])
    ((status, headers, _),) = _responses(b"".join(transport.writes))
    assert status == 200 and headers["connection"] == "close" and transport.closed


def test_pipelined_large_quoted_and_other_requests_over_a_real_connection(served):  # noqa: F811
    many = {"entities": [{"user_id": f"u{n % 9}"} for n in range(990)]}
    assert len(orjson.dumps(many)) > HEAVY_BYTES  # answered by the ASGI path, in a thread
    requests = [
        _request("/v1/predict/risk", PREDICT[0]),
        b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n",
        _request("/v1/predict/risk", many),
        _request("/v1/predict/ris%6B", PREDICT[0]),  # unquoted by uvicorn: the ASGI path
        _request("/v1/features", LOOKUP),
        _request("/v1/predict/risk", PREDICT[0], extra="connection: close\r\n"),
    ]
    with serve_in_background(served.app()) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"".join(requests))  # all at once: pipelined
            data = b""
            while chunk := sock.recv(1 << 16):  # until the server closes after the last
                data += chunk
    answers = _responses(data)
    assert [s for s, _, _ in answers] == [200] * 6
    bodies = [orjson.loads(b) for _, _, b in answers]
    assert len(bodies[2]["predictions"]) == 990
    assert _without_ids(bodies[3]) == _without_ids(bodies[0])
    ((_, lookup),) = _asgi_answers(served, [("/v1/features", LOOKUP)])
    assert bodies[4] == orjson.loads(lookup)
    assert answers[5][1]["connection"] == "close"
