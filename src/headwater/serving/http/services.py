"""What the HTTP routes serve from: the services of one project, kept in the app's state."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from headwater.definitions import Model
from headwater.ingestion.service import Ingestor, IngestResult
from headwater.log.base import Log
from headwater.registry.registry import Registry
from headwater.security.access import AccessControl
from headwater.security.audit import AuditLog
from headwater.serving.runtime import Serving
from headwater.streaming.online import OnlineFeatures
from headwater.streaming.processor import Processor

# (alert id, acknowledged by, team, reason) -> the acknowledged alert as JSON
AckAlert = Callable[[str, str, str, str], dict[str, Any]]


@dataclass(frozen=True)
class HttpServices:
    """The routes' dependencies (``app.state.services``), built by ``project/wiring.py``.

    ``ingest`` validates and appends a batch (chunked, as the SDK does); ``ingestor`` names
    the streams (a 404 before any work); ``serving_of`` gives the serving runtime, built at
    the first prediction (its logger thread and loaded models cost nothing until then);
    ``access`` is None when auth is off; ``feature_definitions`` maps each feature output to
    the definition that owns it (scopes name definitions).
    """

    name: str
    max_request_bytes: int
    max_events_per_request: int
    ingestor: Ingestor
    ingest: Callable[[str, list[Any]], IngestResult]
    online: OnlineFeatures
    serving_of: Callable[[], Serving]
    processor: Processor
    log: Log
    clock: Callable[[], int]
    audit: AuditLog
    registry: Registry
    models: Mapping[str, Model]
    ack_alert: AckAlert
    access: AccessControl | None = None
    feature_definitions: Mapping[str, str] | None = None
    max_entities: int = 1000
    environment: str = "default"  # the environment served (on /readyz and in the UI)

    @property
    def serving(self) -> Serving:
        return self.serving_of()
