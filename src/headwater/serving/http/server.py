"""Running the HTTP API: uvicorn on the app, with background tasks beside it (processing,
stream scoring, monitoring) that stop when the server does."""

from __future__ import annotations

import gc
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import uvicorn

from headwater.serving.http.app import App

Task = Callable[[threading.Event], None]  # runs until the event is set


def run_server(
    app: App,
    host: str,
    port: int,
    tasks: Sequence[Task] = (),
    before_start: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until interrupted, each task in a daemon thread."""
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
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        stop.set()


@contextmanager
def serve_in_background(app: App, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` from a thread on a free port of ``host`` while the block runs; yields
    the base URL once the server accepts connections."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
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
