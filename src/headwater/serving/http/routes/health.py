"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Any:
    """Ready when the log and the online store answer and every service's model versions
    load; 503 with the reason otherwise."""
    project = request.app.state.project

    def check() -> dict[str, Any]:
        details: dict[str, Any] = {
            "log_streams": len(project.log.streams()),
            "processor_lag": project.processor.lag(),
            "services": {},
        }
        for name, service in project.definitions.services.items():
            loaded = [project.serving.scorers.get(v.model, v.alias) for v in service.variants]
            details["services"][name] = {
                v.name: f"{s.model} v{s.version}"
                for v, s in zip(service.variants, loaded, strict=True)
            }
        return details

    try:
        details = await run_in_threadpool(check)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return JSONResponse({"status": "unavailable", "reason": repr(exc)}, status_code=503)
    return {"status": "ready", **details}
