"""Where a project's objects are built, each with exactly the ports and services it uses: no
object outside ``project/`` receives the whole project. The ``Project`` facade holds what is
built here and delegates to it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from headwater.definitions import DefinitionError
from headwater.definitions.collection import Definitions
from headwater.features.catalog import FeatureCatalog
from headwater.history.archiver import Archiver
from headwater.ingestion.protect import DataKeys, Protector, missing_secret
from headwater.ingestion.service import Ingestor
from headwater.log.base import Log
from headwater.log.urls import open_log
from headwater.privacy.policies import KeyPseudonyms, load_secret
from headwater.project.config import ServerSettings, Settings
from headwater.registry.registry import Registry
from headwater.security.access import AccessControl
from headwater.security.audit import AuditLog
from headwater.security.keys import KeyStore
from headwater.stores.artifacts.base import ArtifactStore
from headwater.stores.metadata.base import MetadataStore
from headwater.stores.monitor.base import MonitorStore
from headwater.stores.offline.base import OfflineStore
from headwater.stores.online.base import OnlineStore
from headwater.stores.urls import (
    open_artifacts,
    open_metadata,
    open_monitor,
    open_offline,
    open_online,
)
from headwater.streaming.datatests import DataTests
from headwater.streaming.online import OnlineFeatures
from headwater.streaming.processor import Processor
from headwater.training.sets import TrainingSets

if TYPE_CHECKING:
    from headwater.ingestion.service import IngestResult
    from headwater.monitoring.context import MonitorContext
    from headwater.serving.http.app import App
    from headwater.serving.runtime import Serving
    from headwater.sources.runner import SourceRunner
    from headwater.training.trainer import Trainer

Clock = Callable[[], int]
Ingest = Callable[[str, Any], "IngestResult"]


@dataclass
class Stores:
    """The stores a project runs on, opened from the URLs of ``headwater.toml``."""

    log: Log
    online: OnlineStore
    offline: OfflineStore
    metadata: MetadataStore
    artifacts: ArtifactStore
    monitor: MonitorStore

    def close(self) -> None:
        for store in (self.log, self.online, self.metadata):
            store.close()
        close = getattr(self.monitor, "close", None)
        if close is not None:
            close()


def open_stores(settings: Settings) -> Stores:
    urls, root = settings.stores, settings.root
    return Stores(
        open_log(urls.log, root),
        open_online(urls.online, root),
        open_offline(urls.offline, root),
        open_metadata(urls.metadata, root),
        open_artifacts(urls.artifacts, root),
        open_monitor(urls.monitor, root),
    )


@dataclass
class Core:
    """What every use of a project needs, built when it opens."""

    ingestor: Ingestor
    processor: Processor
    archiver: Archiver
    online: OnlineFeatures
    training: TrainingSets
    registry: Registry
    protector: Protector


def build_protector(settings: Settings, metadata: MetadataStore) -> Protector:
    """The PII policies under the secret of ``$HEADWATER_PII_SECRET_<ENV>``,
    ``$HEADWATER_PII_SECRET`` or ``[pii] secret_file``
    (read when the project opens; a bad file refuses to open it, a missing one refuses the
    PII streams' events)."""
    name = settings.environment.own
    secret = load_secret(os.environ, settings.pii_secret_file, name)
    keys = None if secret is None else DataKeys(metadata, secret)
    return Protector(secret, name, keys)


def build_core(
    settings: Settings,
    definitions: Definitions,
    catalog: FeatureCatalog,
    stores: Stores,
    clock: Clock,
) -> Core:
    offline = settings.offline
    protector = build_protector(settings, stores.metadata)
    keys = KeyPseudonyms(
        pii_keys(definitions),
        protector.secret,
        lambda: missing_secret(sorted(definitions.streams), protector.environment),
    )
    archiver = Archiver(
        stores.log,
        stores.offline,
        sorted_history=offline.sorted_history,
        sorted_by=sorted_keys(catalog),
    )
    return Core(
        ingestor=Ingestor(
            stores.log,
            definitions.streams,
            clock,
            settings.ingest.max_future_us,
            protector,
        ),
        processor=Processor(
            stores.log,
            stores.online,
            catalog.plans,
            clock,
            checks=DataTests(definitions, catalog.plans),
        ),
        archiver=archiver,
        online=OnlineFeatures(stores.online, catalog, clock, keys=keys),
        training=TrainingSets.over(
            catalog,
            stores.offline,
            archiver,
            definitions.streams,
            engine=offline.engine,
            sorted_history=offline.sorted_history,
            spark=offline.spark,
            keys=keys,
        ),
        # versions written by 0.1.0 recorded absolute paths under the project's folder
        registry=Registry(
            stores.metadata, stores.artifacts, settings.root / ".headwater" / "artifacts"
        ),
        protector=protector,
    )


def pii_keys(definitions: Definitions) -> frozenset[str]:
    """The entity key fields that are PII (pseudonymized). A key field is PII in every
    stream that has it or in none: its values must be the same pseudonyms wherever entities
    are looked up by it."""
    found = set()
    for field in sorted({k for e in definitions.entities.values() for k in e.keys}):
        policies = {
            name: s.pii_policies.get(field)
            for name, s in definitions.streams.items()
            if field in s.fields
        }
        if len(set(policies.values())) > 1:
            pii = sorted(n for n, p in policies.items() if p)
            clear = sorted(n for n, p in policies.items() if not p)
            raise DefinitionError(
                f"the entity key {field!r} is PII in {', '.join(pii)} but not in "
                f"{', '.join(clear)}: declare it PII in every stream that has it (entities are "
                "looked up by the same pseudonyms everywhere)"
            )
        if "pseudonymize" in policies.values():
            found.add(field)
    return frozenset(found)


def sorted_keys(catalog: FeatureCatalog) -> dict[str, list[tuple[str, ...]]]:
    """For each stream, the key tuples its features are about (the sorted copies to keep)."""
    sorted_by: dict[str, list[tuple[str, ...]]] = {}
    for plan in catalog.plans:
        tuples = sorted_by.setdefault(plan.stream.name, [])
        if plan.entity.keys not in tuples:
            tuples.append(plan.entity.keys)
    return sorted_by


def build_serving(
    settings: Settings, definitions: Definitions, stores: Stores, core: Core, clock: Clock
) -> Serving:
    from headwater.serving.prediction_log import LogAddress
    from headwater.serving.runtime import Serving

    return Serving(
        definitions.services,
        core.registry,
        stores.log,
        core.online,
        stores.online,
        core.training,
        clock,
        log_address=LogAddress(settings.stores.log, settings.root),
    )


def build_trainer(
    settings: Settings,
    definitions: Definitions,
    catalog: FeatureCatalog,
    stores: Stores,
    core: Core,
    clock: Clock,
    log: Callable[[str], None],
) -> Trainer:
    from headwater.training.trainer import Trainer  # scikit-learn loads only to train

    return Trainer(
        registry=core.registry,
        training=core.training,
        catalog=catalog,
        streams=definitions.streams,
        event_log=stores.log,
        archiver=core.archiver,
        clock=clock,
        root=settings.root,
        log=log,
        cache=settings.root / ".headwater" / "cache" / settings.environment.namespace,
    )


def monitor_context(
    settings: Settings,
    definitions: Definitions,
    stores: Stores,
    core: Core,
    clock: Clock,
    flush_predictions: Callable[[], None],
    train: Callable[[str], int],
) -> MonitorContext:
    from headwater.monitoring.context import MonitorContext

    return MonitorContext(
        definitions=definitions,
        log=stores.log,
        log_url=settings.stores.log,
        engine=core.training.engine,
        archiver=core.archiver,
        training=core.training,
        registry=core.registry,
        clock=clock,
        state=stores.monitor,
        flush_predictions=flush_predictions,
        train=train,
        min_sample=settings.monitor.min_sample,
    )


def build_source_runner(
    settings: Settings, definitions: Definitions, stores: Stores, ingest: Ingest, clock: Clock
) -> SourceRunner:
    from headwater.sources.runner import SourceRunner

    return SourceRunner(definitions.sources, ingest, stores.metadata, clock, settings.root)


def build_access(definitions: Definitions, stores: Stores, clock: Clock) -> AccessControl:
    """API keys and who owns what: the owners come from the definitions."""
    owners: dict[tuple[str, str], str] = {}
    for kind, named in (
        ("stream", definitions.streams),
        ("feature", definitions.features),
        ("feature", definitions.derived),
        ("model", definitions.models),
        ("service", definitions.services),
    ):
        for name, definition in named.items():
            owners[(kind, name)] = definition.owner
    feedback = {label.stream.name for label in definitions.labels.values()}
    feedback |= {s.feedback.stream.name for s in definitions.services.values() if s.feedback}
    return AccessControl(KeyStore(stores.metadata, clock), owners, feedback)


def build_app(
    settings: Settings,
    definitions: Definitions,
    catalog: FeatureCatalog,
    stores: Stores,
    core: Core,
    serving: Callable[[], Serving],
    ingest: Ingest,
    clock: Clock,
    access: AccessControl,
    monitor: Callable[[], MonitorContext],
    source_status: Callable[[], list[dict[str, Any]]],
) -> App:
    """The HTTP API of the project (see ``serving/http``) with the web UI at ``/ui``, behind
    the guards ``[server]`` configures."""
    from headwater.definitions.source import redact_url
    from headwater.monitoring.alerts import Alerts
    from headwater.project.config import declared_environments
    from headwater.security.limits import RateLimits
    from headwater.serving.http.app import create_app
    from headwater.serving.http.guards import GuardSettings
    from headwater.serving.http.services import HttpServices
    from headwater.ui import app as ui
    from headwater.ui.sources import UiSources

    server = settings.server
    alerts = Alerts(stores.log, stores.metadata, clock)

    def ack_alert(alert_id: str, by: str, team: str, reason: str) -> dict[str, Any]:
        return alerts.ack(alert_id, by, team, reason).as_dict()

    limits = None
    if server.rate_limit > 0:
        limits = RateLimits(server.rate_limit, server.rate_burst or 2 * server.rate_limit)
    owned_by = {name: column.feature.name for name, column in catalog.columns.items()}
    owned_by.update({name: name for name in catalog.derived})
    app = create_app(
        HttpServices(
            name=settings.name,
            environment=settings.environment.name,
            max_request_bytes=settings.ingest.max_request_bytes,
            max_events_per_request=settings.ingest.max_events_per_request,
            ingestor=core.ingestor,
            ingest=ingest,
            online=core.online,
            serving_of=serving,
            processor=core.processor,
            log=stores.log,
            clock=clock,
            audit=AuditLog(stores.log, clock),
            registry=core.registry,
            models=definitions.models,
            ack_alert=ack_alert,
            access=access if server.auth == "keys" else None,
            feature_definitions=owned_by,
            max_entities=server.max_entities,
        ),
        GuardSettings(
            allowed_hosts=frozenset(server.allowed_hosts),
            allowed_origins=frozenset(server.allowed_origins),
            access=access if server.auth == "keys" else None,
            metrics_public=server.metrics_public,
            rate_limits=limits,
        ),
    )
    ui.mount(
        app,
        UiSources(
            name=settings.name,
            environment=settings.environment.name,
            clock=clock,
            definitions=definitions,
            catalog=catalog,
            log=stores.log,
            metadata=stores.metadata,
            offline=stores.offline,
            registry=core.registry,
            alerts=alerts,
            training=core.training,
            monitor=monitor,
            lag=core.processor.lag,
            source_status=source_status,
            access=access if server.auth == "keys" else None,
            namespace=settings.environment.namespace,
            declared=declared_environments(settings.root) if settings.environment.declared else (),
            stores={kind: redact_url(url) for kind, url in vars(settings.stores).items()},
            readiness=lambda: serving().readiness(),
        ),
    )
    return app


def build_grpc(
    serving: Callable[[], Serving],
    access: AccessControl | None,
    server: ServerSettings,
    address: str,
    tls: tuple[str, str] | None,
    shared: bool = False,
) -> Any:
    """The gRPC server of ``headwater serve --grpc-port`` (see ``serving/grpc``), bound to
    ``address`` and not started; ``shared``: every worker of the server binds that port."""
    try:
        from headwater.serving.grpc.server import build_server
    except ImportError as exc:
        raise DefinitionError(
            f"gRPC needs the grpc extra ({exc.name} is missing): pip install 'headwater[grpc]'"
        ) from None
    try:
        grpc_server, port = build_server(
            serving, access, server.max_entities, address, tls, reuse_port=shared
        )
    except RuntimeError:  # grpc's "failed to bind"
        port = 0
    if port == 0:
        raise DefinitionError(f"cannot serve gRPC on {address}: the port is taken or refused")
    return grpc_server
