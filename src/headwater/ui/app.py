"""The UI's routes on the project's server (``/ui``): the pages, signing in and out, and the
static files. Pages are drawn on the server from the sources (``UiSources``); the guards in
front have checked the key, carried by the session cookie this module sets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from headwater.security.keys import Unauthenticated
from headwater.ui import pages
from headwater.ui.html import COOKIE, Safe, Viewer, esc, layout
from headwater.ui.page import Drawn, NotFound, Page
from headwater.ui.sources import UiSources

ASSETS = Path(__file__).parent / "assets"
HEADERS = {
    # the pages load only their own script and stylesheet; no frame may hold them
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' "
    "'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

router = APIRouter(include_in_schema=False)


def mount(app: FastAPI, sources: UiSources) -> None:
    """Serve the UI from ``app`` at ``/ui``."""
    app.state.ui = sources
    app.mount("/ui/assets", StaticFiles(directory=ASSETS), name="ui-assets")
    app.include_router(router)


async def _render(request: Request, active: str, draw: Callable[[Page], Drawn]) -> Response:
    sources: UiSources = request.app.state.ui
    key = getattr(request.state, "api_key", None)
    viewer = Viewer(key.id, key.team, True) if key is not None else Viewer()
    page = Page(sources, viewer, key, dict(request.query_params))
    try:
        title, body, crumbs = await run_in_threadpool(draw, page)
        status = 200
    except NotFound as exc:
        title, body, crumbs, status = "Not found", Safe(f"<p>{esc(str(exc))}</p>"), [], 404
    html = layout(
        title,
        body,
        active=active,
        project=sources.name,
        environment=sources.environment,
        viewer=viewer,
        crumbs=crumbs,
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


@router.get("/ui")
async def overview(request: Request) -> Response:
    return await _render(request, "overview", pages.overview)


@router.get("/ui/streams")
async def streams(request: Request) -> Response:
    return await _render(request, "streams", pages.streams)


@router.get("/ui/streams/{name}")
async def stream(request: Request, name: str) -> Response:
    return await _render(request, "streams", lambda p: pages.stream(p, name))


@router.get("/ui/features")
async def features(request: Request) -> Response:
    return await _render(request, "features", pages.features)


@router.get("/ui/features/{name}")
async def feature(request: Request, name: str) -> Response:
    return await _render(request, "features", lambda p: pages.feature(p, name))


@router.get("/ui/lineage")
async def lineage(request: Request) -> Response:
    return await _render(request, "lineage", pages.lineage)


@router.get("/ui/models")
async def models(request: Request) -> Response:
    return await _render(request, "models", pages.models)


@router.get("/ui/models/{name}")
async def model(request: Request, name: str) -> Response:
    return await _render(request, "models", lambda p: pages.model(p, name))


@router.get("/ui/models/{name}/compare")
async def compare(request: Request, name: str) -> Response:
    return await _render(request, "models", lambda p: pages.compare(p, name))


@router.get("/ui/services")
async def services(request: Request) -> Response:
    return await _render(request, "services", pages.services)


@router.get("/ui/services/{name}")
async def service(request: Request, name: str) -> Response:
    return await _render(request, "services", lambda p: pages.service(p, name))


@router.get("/ui/monitoring")
async def monitoring(request: Request) -> Response:
    return await _render(request, "monitoring", pages.monitoring)


@router.get("/ui/monitoring/{name}")
async def monitored(request: Request, name: str) -> Response:
    return await _render(request, "monitoring", lambda p: pages.monitored(p, name))


@router.get("/ui/login")
async def login(request: Request, next: str = "/ui") -> Response:
    sources: UiSources = request.app.state.ui
    target = next if next.startswith("/ui") and not next.startswith("//") else "/ui"
    body = Safe(
        '<form class="login" data-login data-next="' + esc(target) + '">'
        "<p>This server asks for an API key. It is kept in a cookie for this browser session "
        "only, and sent to no other site.</p>"
        '<p><label for="key">API key</label><br>'
        '<input id="key" name="key" type="password" autocomplete="off" required '
        'spellcheck="false"></p>'
        '<p><button type="submit">Sign in</button></p>'
        '<p class="error" data-error role="alert"></p></form>'
    )
    html = layout(
        "Sign in",
        body,
        active="",
        project=sources.name,
        environment=sources.environment,
        viewer=Viewer(),
    )
    return HTMLResponse(html, headers=HEADERS)


@router.post("/ui/session")
async def session(request: Request) -> Response:
    """Check a key and keep it in an HttpOnly, SameSite=Strict cookie of this session."""
    sources: UiSources = request.app.state.ui
    try:
        body = await request.json()
    except ValueError:
        body = None
    token = body.get("key") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token.strip():
        return JSONResponse({"detail": 'give the key as {"key": ...}', "error": "Invalid"}, 422)
    if sources.access is None:
        return JSONResponse({"detail": "auth is off: no key is needed"}, 200)
    try:
        key = sources.access.authenticate(token.strip())
    except Unauthenticated as exc:
        return JSONResponse({"detail": str(exc), "error": "Unauthenticated"}, 401)
    answer = JSONResponse({"key_id": key.id, "team": key.team})
    answer.set_cookie(
        COOKIE,
        token.strip(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return answer


@router.post("/ui/logout")
async def logout() -> Response:
    answer = JSONResponse({"signed_out": True})
    answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return answer
