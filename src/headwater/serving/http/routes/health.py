"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from headwater.serving.http.services import HttpServices

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        503: {
            "description": "not ready: the reason",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"status": {"type": "string"}, "reason": {"type": "string"}},
                        "required": ["status", "reason"],
                    }
                }
            },
        }
    },
)
async def readyz(request: Request) -> Any:
    """Ready when the log and the online store answer and every required service
    (``Service(required=True)``) has its model versions loaded; 503 with the reason
    otherwise. Every service's own readiness is listed under ``services`` (its variants'
    versions: loaded, loading, registered and loaded at the first call, missing or failed),
    without loading anything: one unready service of one team never makes the server unready
    unless it is required."""
    services: HttpServices = request.app.state.services
    worker = getattr(request.app.state, "worker", None)
    # which process answered (with ``serve --workers N``), and the background tasks it runs
    answered_by = {} if worker is None else {"worker": worker}

    def check() -> dict[str, Any]:
        serving = services.serving
        readiness = serving.readiness()
        return {
            "project": services.name,
            "environment": services.environment,
            "log_streams": len(services.log.streams()),
            "processor_lag": services.processor.lag(),
            "required": serving.required,
            "services": readiness,
            **answered_by,
        }

    try:
        details = await run_in_threadpool(check)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return JSONResponse(
            {
                "status": "unavailable",
                "reason": repr(exc),
                "project": services.name,
                "environment": services.environment,
                **answered_by,
            },
            status_code=503,
        )
    waiting = [n for n in details["required"] if not details["services"][n]["ready"]]
    if waiting:
        first = details["services"][waiting[0]]
        reason = f"required service {waiting[0]!r} is not ready: {first['reason']}"
        if len(waiting) > 1:
            reason += f" (and {len(waiting) - 1} more required services)"
        return JSONResponse({"status": "unavailable", "reason": reason, **details}, 503)
    return {"status": "ready", **details}
