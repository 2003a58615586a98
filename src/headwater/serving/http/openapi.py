"""The OpenAPI document, made to describe the server exactly: every status a route or a guard
can answer, each with its body (``ErrorBody`` for refusals), and the API key security schemes
on every route that needs a key when ``auth = "keys"`` (none when auth is off)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from headwater.serving.http.guards import PUBLIC_PATHS, WRITE_METHODS

ERROR_BODY = {
    "type": "object",
    "description": "Why the request was refused: a message, or a structure (the rejected "
    "events of an ingest, the fields of an invalid body)",
    "properties": {
        "detail": {"description": "The reason"},
        "error": {"type": "string", "description": "The kind of refusal"},
    },
    "required": ["detail"],
}
GUARDS = {
    "400": "the Host header is not one of [server] allowed_hosts, or the body is not JSON",
    "401": "no API key, or a malformed, unknown, revoked or expired one",
    "403": "the API key lacks the scope, or the Origin is not allowed",
    "415": "a write without content-type: application/json",
    "429": "the API key is over its rate limit (see Retry-After)",
}
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]


def install(app: FastAPI, auth: bool, rate_limited: bool, metrics_public: bool) -> None:
    """Replace ``app.openapi`` with the exact document (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _complete(schema, auth, rate_limited, metrics_public)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _complete(schema: dict[str, Any], auth: bool, rate_limited: bool, metrics_public: bool) -> None:
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["ErrorBody"] = ERROR_BODY
    components["schemas"].pop("HTTPValidationError", None)
    components["schemas"].pop("ValidationError", None)
    if auth:
        components["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key (hw_<id>_<secret>): `headwater keys create`",
            },
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            public = path in PUBLIC_PATHS or (path == "/metrics" and metrics_public)
            keyed = auth and not public
            statuses = ["400"]
            if method.upper() in WRITE_METHODS:
                statuses.append("415")
            if keyed:
                operation["security"] = SECURITY
                statuses += ["401", "403"] + (["429"] if rate_limited else [])
            responses = operation.setdefault("responses", {})
            for status in statuses:
                responses.setdefault(status, {"description": GUARDS[status]})
            for status, response in responses.items():
                if status.startswith(("4", "5")) and _plain(response):
                    response["content"] = {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                    }


def _plain(response: dict[str, Any]) -> bool:
    """Whether a response has no schema of its own (or FastAPI's validation error)."""
    content = response.get("content", {}).get("application/json")
    if content is None:
        return True
    schema = content.get("schema", {})
    return not schema or schema.get("$ref", "").endswith("/HTTPValidationError")
