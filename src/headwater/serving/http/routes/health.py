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
    """Ready when the log and the online store answer and every service's model versions
    load; 503 with the reason otherwise."""
    services: HttpServices = request.app.state.services
    worker = getattr(request.app.state, "worker", None)
    # which process answered (with ``serve --workers N``), and the background tasks it runs
    answered_by = {} if worker is None else {"worker": worker}

    def check() -> dict[str, Any]:
        details: dict[str, Any] = {
            "project": services.name,
            "environment": services.environment,
            "log_streams": len(services.log.streams()),
            "processor_lag": services.processor.lag(),
            "services": {},
            **answered_by,
        }
        for name, service in services.serving.services.items():
            loaded = [services.serving.scorers.get(v.model, v.alias) for v in service.variants]
            details["services"][name] = {
                v.name: f"{s.model} v{s.version}"
                for v, s in zip(service.variants, loaded, strict=True)
            }
        return details

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
    return {"status": "ready", **details}
