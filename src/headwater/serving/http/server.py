"""Running the HTTP API: uvicorn on the app, with background tasks beside it (processing,
stream scoring, monitoring) that stop when the server does."""

from __future__ import annotations

import gc
import ipaddress
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import uvicorn

from headwater.serving.http.app import App
from headwater.serving.http.protocol import HotProtocol

Task = Callable[[threading.Event], None]  # runs until the event is set


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_server(
    app: App,
    host: str,
    port: int,
    tasks: Sequence[Task] = (),
    before_start: Callable[[], None] | None = None,
    tls: tuple[str, str] | None = None,
    announce: Callable[[str], None] | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until interrupted, each task in a daemon thread;
    ``tls`` is (certificate file, key file); ``announce`` is called with the base URL once
    the server accepts connections; ``sock`` is a listening socket bound to that address
    already (one a supervisor shares between worker processes)."""
    stop = threading.Event()
    for task in tasks:
        threading.Thread(target=task, args=(stop,), daemon=True).start()
    # Latency: loaded objects leave the collector's generations (gen-2 passes over them cost
    # milliseconds), and the logger and shadow threads hand the GIL back sooner.
    gc.collect()
    gc.freeze()
    if before_start is not None:
        before_start()
    sys.setswitchinterval(0.001)
    server = uvicorn.Server(_config(app, host, port, tls))
    if threading.current_thread() is threading.main_thread():
        # uvicorn finishes the requests in flight on SIGTERM, then raises the signal again
        # under the handler found before it: this one turns it into an orderly exit, so the
        # callers' cleanup runs (gRPC's calls in flight, every logged prediction written)
        signal.signal(signal.SIGTERM, _exit_cleanly)
    if announce is not None:
        scheme = "https" if tls else "http"
        name = f"[{host}]" if ":" in host else host
        threading.Thread(
            target=_announce, args=(server, f"{scheme}://{name}:{port}", announce), daemon=True
        ).start()
    try:
        server.run(sockets=[sock] if sock is not None else None)
    finally:
        stop.set()


def _config(app: App, host: str, port: int, tls: tuple[str, str] | None = None) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # never printed at this level, but worked out for each request
        server_header=False,  # nothing to fingerprint, and one header less per response
        http=HotProtocol,  # the hot routes answered in the parser's callback, in one write
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _announce(server: uvicorn.Server, url: str, announce: Callable[[str], None]) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.05)
    if server.started:
        announce(url)


@contextmanager
def serve_in_background(app: App, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` from a thread on a free port of ``host`` while the block runs; yields
    the base URL once the server accepts connections."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, host, port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
