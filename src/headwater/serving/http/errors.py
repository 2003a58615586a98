"""How exceptions become HTTP answers: one table, used by the FastAPI routes and the fast path."""

from __future__ import annotations

import orjson
from fastapi import HTTPException

from headwater.definitions import DefinitionError, HeadwaterError
from headwater.errors import NotFoundError, StoreUnavailable
from headwater.features.catalog import UnknownFeatureError
from headwater.ingestion.service import UnknownStreamError
from headwater.log.base import LogError
from headwater.registry.registry import PromotionRefused, RegistryError
from headwater.security.access import Forbidden
from headwater.security.keys import KeyManagementError, Unauthenticated
from headwater.security.scopes import ScopeError
from headwater.serving.runtime import UnknownServiceError
from headwater.serving.scoring import NoModelVersion
from headwater.streaming.online import MissingKeyError

# Exceptions map to HTTP statuses here, not inside the exceptions; the first match wins.
STATUS_OF: list[tuple[type[Exception], int]] = [
    (Unauthenticated, 401),
    (Forbidden, 403),
    (UnknownStreamError, 404),
    (UnknownFeatureError, 404),
    (UnknownServiceError, 404),
    (NotFoundError, 404),
    (PromotionRefused, 409),  # the model's promotion policy refuses the version
    (RegistryError, 404),  # no such model, version or alias
    (MissingKeyError, 422),
    (NoModelVersion, 503),
    (DefinitionError, 422),
    (ScopeError, 422),
    (KeyManagementError, 422),
    (LogError, 503),  # the log (e.g. a Kafka broker) cannot be reached: nothing acknowledged
    (StoreUnavailable, 503),  # Redis or PostgreSQL cannot be reached: retry later
    (HeadwaterError, 500),
]


def error_answer(exc: Exception) -> tuple[int, bytes] | None:
    """The status and JSON body for an expected error; None for anything else (a bug: 500)."""
    if isinstance(exc, HTTPException):
        return exc.status_code, orjson.dumps({"detail": exc.detail})
    for exc_type, status in STATUS_OF:
        if isinstance(exc, exc_type):
            return status, orjson.dumps({"detail": str(exc), "error": type(exc).__name__})
    return None
