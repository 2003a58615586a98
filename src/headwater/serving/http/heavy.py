"""Keeping the event loop free: a call with a large body runs in the thread pool, so one
request of many entities never stalls ``/healthz`` or the small requests beside it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

# Bodies up to this size are answered on the event loop: a few entities take well under a
# millisecond, less than the hand-off to a thread costs.
HEAVY_BYTES = 16 * 1024


async def answer_off_loop(
    answer: Callable[..., tuple[int, bytes]], app: Any, body: bytes, *args: Any
) -> tuple[int, bytes]:
    if len(body) <= HEAVY_BYTES:
        return answer(app, body, *args)
    return await run_in_threadpool(answer, app, body, *args)


def too_many(count: int, limit: int) -> str:
    return (
        f"{count} entities in one request; the limit is {limit} ([server] max_entities): "
        "split the request, or use batch scoring (`headwater score`)"
    )
