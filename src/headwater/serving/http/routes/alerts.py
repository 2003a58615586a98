"""``POST /v1/alerts/{id}/ack``: acknowledge a monitoring alert (scope ``alerts:ack``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from headwater.serving.http.guards import caller
from headwater.serving.http.services import HttpServices

router = APIRouter(tags=["alerts"])


class AckRequest(BaseModel):
    reason: str = Field("", max_length=500, description="What was done about it")


class AckResponse(BaseModel):
    id: str
    ack: dict[str, Any]


@router.post(
    "/v1/alerts/{alert_id}/ack",
    response_model=AckResponse,
    responses={404: {"description": "no alert has this id"}},
)
async def ack_alert(alert_id: str, body: AckRequest, request: Request) -> Any:
    """Acknowledge an alert; the acknowledgement records the key's team and the reason."""
    services: HttpServices = request.app.state.services
    key_id, team = caller(request.state)

    def ack() -> dict[str, Any]:
        alert = services.ack_alert(alert_id, f"{team} (key {key_id})", team, body.reason)
        services.audit.record(key_id, team, "alert.ack", alert_id)
        return {"id": alert_id, "ack": alert["ack"]}

    return await run_in_threadpool(ack)
