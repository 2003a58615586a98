"""The one HTTP server: ingest events and read online features (predictions come later)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from headwater.serving.http import docs, openapi
from headwater.serving.http.errors import STATUS_OF
from headwater.serving.http.fastpath import FastPaths, HotApp
from headwater.serving.http.guards import Guards, GuardSettings
from headwater.serving.http.methods import Methods
from headwater.serving.http.metrics import ServerMetrics
from headwater.serving.http.routes import (
    alerts,
    events,
    features,
    health,
    inference,
    metrics,
    models,
    predict,
)
from headwater.serving.http.services import HttpServices

App = FastAPI  # what create_app returns, named for modules that do not import fastapi


def create_app(services: HttpServices, guard: GuardSettings) -> HotApp:
    """Build the HTTP API over a project's services (``headwater serve`` runs it)."""
    app = HotApp(
        title=f"headwater: {services.name}",
        version="1",
        description="Ingest raw events, read online features, predict by entity id.",
        docs_url=None,
        redoc_url=None,
    )
    docs.mount(app)
    openapi.install(
        app, guard.access is not None, guard.rate_limits is not None, guard.metrics_public
    )
    app.state.services = services
    app.state.metrics = ServerMetrics()
    app.include_router(events.router)
    events.add_stream_routes(app, services.ingestor.streams)
    app.include_router(features.router)
    app.include_router(predict.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(models.router)
    app.include_router(alerts.router)
    app.include_router(inference.router)

    for exc_type, status in STATUS_OF:
        app.add_exception_handler(exc_type, _handler(status))
    # predictions and feature lookups are answered before the middleware below, FastAPI's
    # routing and its dependency machinery, behind the same guards (the routes above stay
    # for the OpenAPI document and answer identically)
    app.fast_paths = FastPaths(Guards(None, guard))
    # in front: a method no route takes is 405; then every request passes the guards
    app.add_middleware(Guards, settings=guard)
    app.add_middleware(Methods, document=app.openapi)
    if guard.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(guard.allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-api-key"],
        )
    return app


def _handler(status: int):  # type: ignore[no-untyped-def]
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=status)

    return handle
