"""``/v1/models``: the registered models with their versions and aliases, and moving an alias
(promote a version, or roll back) with a reason, recorded with the calling key's team."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from headwater.registry.registry import RegistryError
from headwater.serving.http.guards import caller
from headwater.serving.http.services import HttpServices

router = APIRouter(tags=["models"])


class ModelVersionOut(BaseModel):
    version: int
    metrics: dict[str, float | None]
    created_us: int | None = None


class ModelOut(BaseModel):
    name: str
    owner: str
    aliases: dict[str, int]
    versions: list[ModelVersionOut]


class ModelsResponse(BaseModel):
    models: list[ModelOut]


class AliasRequest(BaseModel):
    """Point the alias at ``version``, or back at its previous version with ``rollback``."""

    version: int | None = Field(None, ge=1, description="The version to point the alias at")
    rollback: bool = Field(False, description="Point the alias back at its previous version")
    reason: str = Field(..., min_length=1, max_length=500, description="Why (kept in history)")
    force: bool = Field(False, description="Skip the model's promotion policy (champion)")


class AliasResponse(BaseModel):
    model: str
    alias: str
    version: int
    previous: int | None
    by: str


@router.get("/v1/models", response_model=ModelsResponse)
async def list_models(request: Request) -> Any:
    """Every model with its versions' metrics and its aliases (any valid key)."""
    services: HttpServices = request.app.state.services
    return await run_in_threadpool(_models, services)


def _models(services: HttpServices) -> dict[str, Any]:
    out = []
    for name, model in sorted(services.models.items()):
        versions = services.registry.versions(name)
        aliases = {a: int(d["version"]) for a, d in services.registry.aliases(name).items()}
        out.append(
            {
                "name": name,
                "owner": model.owner,
                "aliases": aliases,
                "versions": [
                    {
                        "version": v["version"],
                        "metrics": v.get("metrics", {}),
                        "created_us": v.get("created_us"),
                    }
                    for v in versions
                ],
            }
        )
    return {"models": out}


@router.post(
    "/v1/models/{model}/aliases/{alias}",
    response_model=AliasResponse,
    responses={
        404: {"description": "unknown model, version or alias history"},
        409: {"description": "the model's promotion policy refuses the version"},
    },
)
async def move_alias(model: str, alias: str, body: AliasRequest, request: Request) -> Any:
    """Promote a version to an alias (``champion``: the promotion policy must allow it unless
    ``force``), or roll the alias back; scope ``models:promote[:MODEL]``."""
    services: HttpServices = request.app.state.services
    key_id, team = caller(request.state)
    by = f"{team} (key {key_id})"
    return await run_in_threadpool(_move, services, model, alias, body, by, key_id, team)


def _move(
    services: HttpServices,
    model: str,
    alias: str,
    body: AliasRequest,
    by: str,
    key_id: str,
    team: str,
) -> dict[str, Any]:
    definition = services.models.get(model)
    if definition is None:
        raise RegistryError(f"unknown model {model!r}")
    previous = services.registry.alias(model, alias)
    now = services.clock()
    if body.rollback:
        version = services.registry.rollback(model, alias, by, body.reason, now)
    elif body.version is None:
        raise HTTPException(422, 'give "version", or "rollback": true')
    else:
        version = body.version
        services.registry.promote(
            definition, version, alias, by, body.reason, now, force=body.force
        )
    action = "rollback" if body.rollback else "promote"
    services.audit.record(key_id, team, action, f"{model}:{alias}", counts={"version": version})
    return {"model": model, "alias": alias, "version": version, "previous": previous, "by": by}
