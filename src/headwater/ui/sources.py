"""What the UI's pages read: the ports and services of one project, built by
``project/wiring.py`` (no page receives the project itself)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headwater.definitions.collection import Definitions
from headwater.features.catalog import FeatureCatalog
from headwater.log.base import Log
from headwater.monitoring.alerts import Alerts
from headwater.monitoring.context import MonitorContext
from headwater.registry.registry import Registry
from headwater.security.access import AccessControl
from headwater.stores.metadata.base import MetadataStore
from headwater.stores.offline.base import OfflineStore
from headwater.training.sets import TrainingSets
from headwater.ui.memo import Memo


@dataclass(frozen=True)
class UiSources:
    """The pages' dependencies (``app.state.ui``).

    ``training`` answers a stream's archived history; ``monitor`` gives the monitor's context
    (built at the first monitoring page); ``lag`` is the processor's lag per feature set;
    ``source_status`` each source's checkpoint;
    ``readiness`` is each service's readiness, as ``/readyz`` reports it;
    ``access`` is None when auth is off (every action is shown then, as the API allows it);
    ``memo`` keeps what a page computed from the log, keyed by the log offsets it read, so a
    figure is recomputed exactly when new records arrived.
    """

    name: str
    environment: str
    clock: Callable[[], int]
    definitions: Definitions
    catalog: FeatureCatalog
    log: Log
    metadata: MetadataStore
    offline: OfflineStore
    registry: Registry
    alerts: Alerts
    training: TrainingSets
    monitor: Callable[[], MonitorContext]
    lag: Callable[[], dict[str, int]]
    source_status: Callable[[], list[dict[str, Any]]]
    access: AccessControl | None = None
    namespace: str = ""  # where this environment's data sits on shared stores
    declared: tuple[str, ...] = ()  # every environment the project declares
    stores: dict[str, str] = field(default_factory=dict)  # kind -> URL, credentials redacted
    # each service's readiness as /readyz reports it (loads nothing); None: not served here
    readiness: Callable[[], dict[str, dict[str, Any]]] | None = None
    memo: Memo = field(default_factory=Memo)
