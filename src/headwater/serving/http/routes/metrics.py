"""``GET /metrics``: Prometheus exposition of the server's counters and histograms."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from headwater.serving.http.workers import multiprocess_metrics

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(request: Request) -> Response:
    """Counters and histograms of the server, the monitor's figures when it runs beside it
    (needs a key unless ``[server] metrics_public = true``); with ``serve --workers N``,
    the totals of every worker, whichever answers."""
    registry = request.app.state.metrics.registry
    if multiprocess_metrics():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
