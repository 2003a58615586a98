"""``Project``: the user's handle on a project folder; it delegates each concern."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from headwater.definitions import DefinitionError, Model, Stream
from headwater.definitions.types import to_micros
from headwater.errors import HeadwaterError, did_you_mean
from headwater.features.catalog import FeatureCatalog, UnknownFeatureError
from headwater.ingestion.service import IngestResult
from headwater.log.base import GroupLog, SoleMember
from headwater.project import wiring
from headwater.project.config import Settings, load_settings
from headwater.project.loader import Definitions, load_definitions
from headwater.project.planning import Plan, apply_plan, make_plan
from headwater.security.access import AccessControl
from headwater.security.audit import AuditLog
from headwater.security.keys import ApiKey
from headwater.serving.http.workers import Worker
from headwater.streaming.processor import ProcessingError, ProcessStats
from headwater.streaming.workers import run_workers
from headwater.training.sets import to_arrow

if TYPE_CHECKING:
    import pandas as pd

    from headwater.environments.replay import Replay, ReplayOptions
    from headwater.monitoring.alerts import Alerts
    from headwater.monitoring.context import MonitorContext
    from headwater.monitoring.ledger import Progress
    from headwater.monitoring.service import MonitorRun
    from headwater.project.replaying import Side
    from headwater.serving.http.app import App
    from headwater.serving.runtime import Serving
    from headwater.sources.runner import SourceRunner
    from headwater.training.trainer import TrainResult

Clock = Callable[[], "int | datetime"]
INGEST_CHUNK = 10_000
TABLE_CHUNK = 100_000
_LOGGER = logging.getLogger("headwater.project")


def system_clock() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Erasure:
    """What ``Project.erase`` did, and what the log keeps."""

    entity: str
    field: str
    streams: list[str]  # whose encrypted fields of the entity are unreadable now
    data_keys: int  # data keys deleted (0: the entity had none)
    states: int  # online states deleted
    composite: list[str]  # feature sets of composite entities with this key: not looked up
    log: str  # the log's URL

    def retained(self) -> str:
        """What the log still holds after the erasure."""
        kafka = self.log.startswith("kafka://")
        where = (
            "the Kafka topics keep the entity's records until their retention (retention.ms)"
            if kafka
            else "the embedded log file keeps the entity's events"
        )
        return (
            f"{where}, as does the history; in them the encrypted fields are ciphertext no key "
            f"can read now, but the key ({self.field}) and fields that are not encrypted stay, "
            "and `headwater process --rebuild` would compute the entity's features from them "
            "again"
        )


@dataclass(frozen=True)
class StreamDescription:
    """What ``Project.describe_stream`` finds: a row per field, a line per sorted copy."""

    stream: Stream
    fields: Any  # a pandas DataFrame
    copies: list[str]
    example: dict[str, Any] | None = None  # the latest event, PII as mock values (``_mock``)


class Project:
    """A headwater project: definitions plus the stores named in ``headwater.toml``.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "headwater.toml").write_text('[project]\\ndefinitions = []\\n')
    >>> Project(folder).plan().summary()
    {}
    """

    def __init__(
        self, path: str | Path = ".", *, env: str | None = None, clock: Clock | None = None
    ) -> None:
        self.settings: Settings = load_settings(path, env)
        self.environment = self.settings.environment
        self.root = self.settings.root
        self._clock_source = clock
        self.definitions: Definitions = load_definitions(self.root, self.settings.definitions)
        self.catalog = FeatureCatalog(
            self.definitions.features.values(), self.definitions.derived.values()
        )
        self.stores = wiring.open_stores(self.settings)
        self.log, self.online_store = self.stores.log, self.stores.online
        self.offline_store, self.metadata = self.stores.offline, self.stores.metadata
        self.core = wiring.build_core(
            self.settings, self.definitions, self.catalog, self.stores, self.now
        )
        self.ingestor, self.processor = self.core.ingestor, self.core.processor
        self.archiver, self.online = self.core.archiver, self.core.online
        self.training, self.registry = self.core.training, self.core.registry
        self._serving: Serving | None = None
        self._access: AccessControl | None = None
        self._check_models()

    def _check_models(self) -> None:
        for model in self.definitions.models.values():
            try:
                res = self.catalog.resolve(list(model.features))
            except UnknownFeatureError as exc:
                raise DefinitionError(f"model {model.name!r}: {exc}") from None
            for plan_id in res.columns:
                entity = self.catalog.plan(plan_id).entity
                # features of the model's entity, or of entities whose keys it holds (a
                # user-item model reads user, item and user-item features)
                if not set(entity.keys) <= set(model.entity.keys):
                    raise DefinitionError(
                        f"model {model.name!r} predicts for {model.entity.name!r} (keys "
                        f"{list(model.entity.keys)}) but uses features of {entity.name!r} "
                        f"(keys {list(entity.keys)}); use features of entities whose keys the "
                        "model's entity has"
                    )
            if res.context:
                raise DefinitionError(
                    f"model {model.name!r} uses derived features that need request context "
                    f"({', '.join(res.context)}); training rows have no request context"
                )

    def model(self, name: str) -> Model:
        return self.definitions.model(name)

    def now(self) -> int:
        """The project's clock, in UTC microseconds."""
        if self._clock_source is None:
            return system_clock()
        value = self._clock_source()
        return value if isinstance(value, int) else to_micros(value)

    # -- definitions ---------------------------------------------------------------------

    def plan(self) -> Plan:
        """What ``apply`` would change in the metadata store."""
        return make_plan(self.definitions.all(), self.metadata)

    def apply(self, *, by: str = "sdk") -> Plan:
        """Register the definitions (content-hash versions), recording ``by`` as who applied
        them; refuses unsafe removals."""
        return apply_plan(self.definitions.all(), self.metadata, self.now(), by)

    # -- events --------------------------------------------------------------------------

    def ingest(self, stream: str, events: Iterable[Mapping[str, Any]] | Any) -> IngestResult:
        """Validate and durably append events (dicts, or a pandas/polars/Arrow table).

        Invalid events go to the dead-letter stream with their reason; the result lists them.
        """
        self.ingestor.stream(stream)
        result = IngestResult()
        if not isinstance(events, list | tuple) and (
            hasattr(events, "to_arrow")
            or isinstance(events, pa.Table)
            or type(events).__module__.startswith("pandas")
        ):
            table = to_arrow(events)  # whole columns are validated at once
            for i in range(0, table.num_rows, TABLE_CHUNK):
                chunk = table.slice(i, TABLE_CHUNK)
                result.merge(self.ingestor.ingest_table(stream, chunk), i)
            return result
        rows = events if isinstance(events, list | tuple) else list(events)
        for i in range(0, len(rows), INGEST_CHUNK):
            result.merge(self.ingestor.ingest(stream, rows[i : i + INGEST_CHUNK]), i)
        return result

    def process(
        self,
        *,
        forever: bool = False,
        stop: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
        workers: int = 1,
        group: str | None = None,
        rebuild: bool = False,
        batch_size: int | None = None,
        commit_seconds: float | None = None,
        cached_states: int | None = None,
    ) -> ProcessStats:
        """Bring the online store up to date with the log (or keep it so until ``stop``).

        ``rebuild`` first forgets the feature sets' online state and checkpoints, so the
        whole log is replayed. ``forever`` on a log with consumer groups (Kafka) joins the
        group ``group`` (default ``headwater.<project name>.processor``) and processes the
        partitions it assigns, so processes on several hosts share the work; ``workers``
        starts that many worker processes here, each a member of the group.

        ``batch_size`` (log records read and applied at a time), ``commit_seconds`` (behind a
        backlog, how often each partition commits; 0: every batch) and ``cached_states``
        (decoded entity states kept in memory between batches) tune the processor; workers
        get the same.
        """
        knobs = {"batch_size": batch_size, "commit_seconds": commit_seconds}
        knobs["cached_states"] = cached_states
        chosen = {k: v for k, v in knobs.items() if v is not None}
        if chosen.get("batch_size", 1) < 1 or min(chosen.values(), default=0) < 0:
            raise ProcessingError(
                "--batch-size must be at least 1, --commit-seconds and --cached-states at least 0"
            )
        if chosen:
            self.processor.configure({**self.processor.settings(), **chosen})
        sharing = isinstance(self.log, GroupLog)
        if workers < 1:
            raise ProcessingError(f"workers must be at least 1, not {workers}")
        if not sharing and (workers > 1 or group is not None):
            raise ProcessingError(
                f"the log {self.settings.stores.log!r} has no consumer groups to share its "
                "partitions, so one worker processes it: drop --workers and --group, or put "
                'the log on Kafka (log = "kafka://host:port?partitions=N" in headwater.toml)'
            )
        if not forever and (workers > 1 or group is not None):
            raise ProcessingError("workers and groups share continuous processing: add forever")
        if rebuild:
            self.clear_online()
        if not forever:
            return self.processor.run_until_caught_up(progress, stop)
        stop = stop or threading.Event()
        group = group or f"headwater.{self.settings.name}.processor"
        if workers > 1:
            args = (str(self.root), self.environment.name, group, self.processor.settings())
            return run_workers(_process_in_worker, args, workers, stop)
        streams = self.processor.streams
        log = self.log
        member = log.join(group, streams) if isinstance(log, GroupLog) else SoleMember(log, streams)
        try:
            return self.processor.run_forever(stop, membership=member)
        finally:
            member.close()

    def replay_into(
        self,
        target: Project,
        *,
        streams: Sequence[str] | None = None,
        include_internal: bool = False,
        options: ReplayOptions | None = None,
        append: bool = False,
        batch: int = 5000,
    ) -> Replay:
        """A replay of this environment's log into ``target``'s (another environment of this
        project, or of a project with the same streams); refusals come here, before anything
        is written. ``run()`` copies what the log holds, ``follow(stop)`` keeps copying."""
        from headwater.environments.replay import ReplayOptions
        from headwater.project.replaying import open_replay

        return open_replay(
            self._side(),
            target._side(),
            streams=streams,
            include_internal=include_internal,
            options=options or ReplayOptions(),
            append=append,
            batch=batch,
        )

    def _side(self) -> Side:
        from headwater.project.replaying import Side

        streams = self.definitions.streams
        return Side(self.settings, streams, self.log, self.metadata, self.now)

    def clear_online(self) -> None:
        """Forget the feature sets' online state and checkpoints: the next ``process``
        replays the whole log (e.g. after the online store lost its data)."""
        self.processor.clear()

    def lag(self) -> dict[str, int]:
        """Per feature set, how many log records the online store has not processed yet."""
        return self.processor.lag()

    # -- features ------------------------------------------------------------------------

    def online_features(
        self,
        entity_keys: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        features: Sequence[str],
        *,
        at: datetime | None = None,
    ) -> Any:
        """Feature values from the online store, at now (or ``at``).

        One mapping of keys (and request context) gives one dict; a list gives a list.
        """
        single = isinstance(entity_keys, Mapping)
        rows: list[Mapping[str, Any]] = (
            [entity_keys] if isinstance(entity_keys, Mapping) else list(entity_keys)
        )
        at_us = None if at is None else to_micros(at)
        values = self.online.get(rows, features, at_us)
        return values[0] if single else values

    def training_set(
        self,
        spine: Any,
        features: Sequence[str],
        *,
        time_column: str = "timestamp",
        output: str = "pandas",
    ) -> Any:
        """Every feature at each spine row's time, point-in-time correct, from the log's history.

        ``spine`` has the entities' key columns and ``time_column``; pandas, polars or Arrow.
        ``output`` is "pandas" or "arrow".
        """
        table = self.training.build(spine, features, time_column)
        return table.to_pandas() if output == "pandas" else table

    def describe_feature(self, name: str, sample: int = 2000, seed: int = 0) -> Any:
        """A feature's values at random (entity, time) pairs over its stream's history."""
        import random

        import pandas as pd

        res = self.catalog.resolve([name])
        plan = self.catalog.plan(next(iter(res.columns))) if res.columns else None
        if plan is None:
            raise DefinitionError(f"{name!r} is a derived feature; describe its inputs")
        history = self.training.history(plan.stream)
        if history.num_rows == 0:
            raise DefinitionError(f"stream {plan.stream.name!r} has no events yet")
        rnd = random.Random(seed)
        rows = [rnd.randrange(history.num_rows) for _ in range(sample)]
        keys = {k: [history[k][i].as_py() for i in rows] for k in plan.entity.keys}
        times = [history["_event_time"][i].as_py() + 1 for i in rows]
        spine = pd.DataFrame({**keys, "timestamp": pd.to_datetime(times, unit="us", utc=True)})
        return self.training_set(spine, [name])[name]

    # -- models --------------------------------------------------------------------------

    def train(
        self,
        model: str,
        *,
        reproduce: int | None = None,
        log: Callable[[str], None] | None = None,
        snapshot: dict[str, Any] | None = None,
        shared_with: Sequence[str] = (),
    ) -> TrainResult:
        """Run a model's training pipeline and register the new version.

        ``reproduce`` rebuilds the training data of an earlier version from the log;
        ``snapshot`` and ``shared_with`` are how ``train_all`` hands a model its part.
        """
        trainer = self._trainer(log)
        result = trainer.train(
            self.model(model), reproduce=reproduce, snapshot=snapshot, shared_with=shared_with
        )
        uri = self.settings.tracking.mlflow_uri
        if uri:
            from headwater.registry.mlflow_mirror import mirror

            doc = self.registry.version(model, result.version)
            search = result.run.get("search") or {}
            trials = [self.registry.run(i) for i in search.get("runs", [])]
            mirror(uri, result.run, doc, read=self.registry.read_artifact, trials=trials)
        return result

    def train_all(
        self,
        models: Sequence[str] | None = None,
        *,
        team: str | None = None,
        jobs: int = 1,
        log: Callable[[str], None] | None = None,
    ) -> dict[str, TrainResult | Exception]:
        """Train many models (``models``, or every model ``team`` owns, or every model that
        is not deprecated): one snapshot of the log for all, one training-set build for each
        group of models that learn from the same examples, then each model's remaining
        steps, in ``jobs`` processes. A model's failure is its own: the result maps each
        model to its ``TrainResult`` or the exception that stopped it."""
        say = log or (lambda _: None)
        if models is None:
            models = [
                n
                for n, m in sorted(self.definitions.models.items())
                if not m.deprecated and (team is None or m.owner == team)
            ]
        chosen = [self.model(n) for n in models]
        if not chosen:
            return {}
        trainer = self._trainer(say)
        snapshots = trainer.snapshots(chosen)
        groups = trainer.share_training_sets(chosen, snapshots)
        shared = {name: group for group in groups for name in group}
        out: dict[str, TrainResult | Exception] = {}
        if jobs <= 1:
            for m in chosen:
                say(f"training {m.name}")
                try:
                    out[m.name] = self.train(
                        m.name,
                        log=say,
                        snapshot=snapshots[m.name],
                        shared_with=shared.get(m.name, ()),
                    )
                except Exception as exc:  # noqa: BLE001 - one model's failure stops only it
                    say(f"{m.name} failed: {exc}")
                    out[m.name] = exc
            return out
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # every stream is archived here, so workers only read history
        for stream in sorted({s for m in chosen for s in trainer.streams_of(m)}):
            self.core.archiver.catch_up(self.definitions.streams[stream])
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {
                m.name: pool.submit(
                    _train_in_worker,
                    str(self.root),
                    self.environment.name,
                    m.name,
                    snapshots[m.name],
                    tuple(shared.get(m.name, ())),
                )
                for m in chosen
            }
            for name, future in futures.items():
                try:
                    out[name] = future.result()
                    say(f"trained {name}: version {out[name].version}")  # type: ignore[union-attr]
                except Exception as exc:  # noqa: BLE001 - one model's failure stops only it
                    say(f"{name} failed: {exc}")
                    out[name] = exc
        return out

    def _trainer(self, log: Callable[[str], None] | None) -> Any:
        return wiring.build_trainer(
            self.settings,
            self.definitions,
            self.catalog,
            self.stores,
            self.core,
            self.now,
            log or (lambda _: None),
        )

    def explain(
        self,
        model: str,
        spine: Any,
        *,
        version: int | str = "champion",
        time_column: str = "timestamp",
    ) -> Any:
        """Per-prediction feature contributions of a model version for the spine's rows.

        Returns a pandas DataFrame with the spine, the score and one contribution per feature
        (LightGBM's own SHAP values; other estimators give scores without contributions).
        """
        from headwater.training import evaluation

        definition = self.model(model)
        doc = self.registry.version(model, version)
        estimator, signature = self.registry.load_model(doc)
        frame = self.training_set(spine, signature.features, time_column=time_column)
        X = signature.matrix(frame)
        out = frame.drop(columns=signature.features)
        out["score"] = evaluation.predict_scores(estimator, X, definition.task)
        contrib = evaluation.contributions(estimator, X)
        if contrib is not None:
            out = out.join(contrib.add_prefix("contribution."))
        return out

    def promote(
        self,
        model: str,
        version: int,
        *,
        alias: str = "champion",
        by: str = "sdk",
        reason: str = "",
        force: bool = False,
    ) -> dict[str, Any]:
        """Point an alias at a version; "champion" must pass the model's promotion policy."""
        return self.registry.promote(
            self.model(model), version, alias, by, reason, self.now(), force=force
        )

    # -- serving -------------------------------------------------------------------------

    @property
    def serving(self) -> Serving:
        """The serving runtime (loaded models, predictors, the prediction logger)."""
        if self._serving is None:
            self._serving = wiring.build_serving(
                self.settings, self.definitions, self.stores, self.core, self.now
            )
        return self._serving

    def app(self) -> App:
        """The HTTP API of this project (``headwater serve`` runs it; OpenAPI at /docs)."""
        return wiring.build_app(
            self.settings,
            self.definitions,
            self.catalog,
            self.stores,
            self.core,
            lambda: self.serving,
            self.ingest,
            self.now,
            self.access,
            self._monitor_for_pages,
            lambda: self.source_runner().status() if self.definitions.sources else [],
        )

    def _monitor_for_pages(self) -> MonitorContext:
        """The monitor's context for the UI: it writes the predictions this process logged
        (when it serves any) before reading, and never trains."""

        def flush() -> None:
            if self._serving is not None:
                self._serving.logger.flush()

        def refuse(model: str) -> int:
            raise DefinitionError("the web UI does not train models")

        return wiring.monitor_context(
            self.settings, self.definitions, self.stores, self.core, self.now, flush, refuse
        )

    # -- keys and audit ------------------------------------------------------------------

    @property
    def access(self) -> AccessControl:
        """API keys and the owners of every definition (``headwater keys``)."""
        if self._access is None:
            self._access = wiring.build_access(self.definitions, self.stores, self.now)
        return self._access

    @property
    def alerts(self) -> Alerts:
        """Alerts the monitor raised, and their acknowledgements (``headwater alerts``)."""
        from headwater.monitoring.alerts import Alerts

        return Alerts(self.log, self.metadata, self.now)

    @property
    def audit_log(self) -> AuditLog:
        """The ``_audit`` stream: every write through the server, and key changes."""
        return AuditLog(self.log, self.now)

    def create_key(
        self,
        team: str,
        scopes: Sequence[str],
        *,
        expires_us: int | None = None,
        by: str = "sdk",
        description: str = "",
    ) -> tuple[ApiKey, str]:
        """A new API key of ``team`` and its secret (shown once: only a digest is kept).
        Scopes name existing definitions (see ``security/scopes.py`` for the grammar)."""
        self.access.check_scopes(scopes)
        key, secret = self.access.keys.create(
            team, scopes, by=by, expires_us=expires_us, description=description
        )
        self.audit_log.record("-", by, "key.create", key.id, detail=", ".join(scopes))
        return key, secret

    def revoke_key(self, key_id: str, *, by: str = "sdk") -> ApiKey:
        """Revoke a key; every server refuses it within 5 seconds."""
        key = self.access.keys.revoke(key_id)
        self.audit_log.record("-", by, "key.revoke", key_id)
        return key

    def predict(
        self, service: str, entity: Mapping[str, Any] | None = None, /, **keys: Any
    ) -> dict[str, Any]:
        """Predict in-process, through the same path as HTTP, batch and stream scoring.

        ``project.predict("churn", user_id="u42")``: the response, with a ``prediction_id``;
        the prediction (with its features) is logged to the ``predictions`` stream.
        """
        row = {**(entity or {}), **keys}
        return self.serving.predict(service, [row], "inprocess")[0].response()

    def rank(
        self,
        service: str,
        request: Mapping[str, Any],
        candidates: Sequence[Any],
        k: int | None = None,
    ) -> dict[str, Any]:
        """Rank candidates in-process, through the same path as HTTP: every candidate scored
        and logged, the ``k`` best returned in order.

        ``project.rank("recommend", {"user_id": "u42"}, ["i1", "i2", "i3"], k=2)``
        """
        ranking = self.serving.rank(service, request, candidates, k)
        ranked = self.serving.predictor(service).service.candidates
        if ranked is None:  # rank() refused such a service already
            raise DefinitionError(f"service {service!r} ranks no candidates")
        return ranking.response(ranked.keys)

    def entities(self, entity: str) -> Any:
        """Every key of an entity seen in the streams of its features (a pandas DataFrame)."""
        return self.training.entities(self.definitions.entities[entity])

    def score(self, service: str, spine: Any, *, time_column: str = "timestamp") -> Any:
        """Batch scoring: each spine row's entity as of its time, from the offline store."""
        return self.serving.score_batch(service, spine, time_column)

    def rollback(
        self, model: str, *, alias: str = "champion", by: str = "sdk", reason: str = ""
    ) -> int:
        """Point an alias back at its previous version; returns that version."""
        return self.registry.rollback(model, alias, by, reason, self.now())

    def describe_stream(self, name: str) -> StreamDescription:
        """A stream's fields over its whole history (brought up to date first): counts, null
        rates, distinct values, ranges, and each sorted copy of the history."""
        from headwater.history.describe import describe_copies, describe_stream

        stream = self.definitions.streams[name]
        self.archiver.catch_up(stream)
        latest = self.sample_events(name, 1)
        return StreamDescription(
            stream,
            describe_stream(stream, self.training.engine),
            describe_copies(self.offline_store, stream, self.archiver.sorted_keys(stream)),
            latest[0] if latest else None,
        )

    def sample_events(self, stream: str, n: int = 10, *, mock: bool = True) -> list[dict]:
        """The latest ``n`` events of a stream as its log holds them (oldest first), each with
        ``_event_id`` and ``_event_time``; with ``mock``, a pseudonymized PII field shows a
        realistic fake stable per pseudonym instead, named in the event's ``_mock``."""
        from headwater.history.describe import latest_events

        return latest_events(self.log, self.definitions.streams[stream], n, mock=mock)

    def reveal(self, stream: str, key: Any, limit: int = 20) -> list[dict]:
        """The latest ``limit`` events of one entity (its key value in the stream's first key
        field) with their encrypted fields decrypted under the PII secret (None where the
        entity's data key was erased). Recorded in the audit stream."""
        definition = self.ingestor.stream(stream)
        if "encrypt" not in definition.pii_policies.values():
            raise DefinitionError(
                f"stream {stream!r} has no encrypted fields; its PII fields are "
                f"{', '.join(definition.pii_policies) or 'none'} "
                f"({', '.join(sorted(set(definition.pii_policies.values()))) or '-'})"
            )
        import pyarrow.compute as pc

        first = definition.keys[0]
        value = int(key) if definition.fields[first].dtype.value == "int" else str(key)
        if first in self.online.entity_keys.fields:
            value = str(self.online.entity_keys.value(value))  # stored as its pseudonym
        history = self.training.history(definition)  # brought up to date first
        rows = history.filter(pc.equal(history[first], value)).to_pylist()
        rows.sort(key=lambda r: (r["_event_time"], r["_offset"]))
        events = []
        for row in rows[-limit:]:
            event = {"_event_id": row["_event_id"], "_event_time": row["_event_time"]}
            event.update({f: row.get(f) for f in definition.fields})
            events.append(self.core.protector.reveal(definition, event))
        self.audit_log.record(
            "local", "-", "pii.reveal", f"{stream}/{first}", "ok", {"events": len(events)}
        )
        return events

    def erase(self, entity: str, key: Any) -> Erasure:
        """Erase an entity: delete its data keys (every encrypted value of it, in the log, the
        history and the dead letters, becomes unreadable for good) and its online state.
        What the log keeps is said in the answer."""
        found = self.definitions.entities.get(entity)
        if found is None:
            raise DefinitionError(
                f"no entity {entity!r}" + did_you_mean(entity, list(self.definitions.entities))
            )
        if len(found.keys) != 1:
            raise DefinitionError(
                f"entity {entity!r} has the keys {list(found.keys)}; erase the entities of one "
                "key each (e.g. the user), whose data keys encrypt their fields"
            )
        (field,) = found.keys
        if field in self.online.entity_keys.fields:
            key = self.online.entity_keys.value(str(key))  # stored as its pseudonym
        streams = [
            s.name
            for s in self.definitions.streams.values()
            if s.keys[0] == field and "encrypt" in s.pii_policies.values()
        ]
        keys_erased = self.core.protector.erase(field, key, streams) if streams else 0
        sets = {p.id: [str(key)] for p in self.catalog.plans if p.entity.name == entity}
        states = self.online_store.delete(sets)
        kept = [
            p.id for p in self.catalog.plans if field in p.entity.keys and len(p.entity.keys) > 1
        ]
        self.audit_log.record(
            "local", "-", "pii.erase", entity, "ok", {"data_keys": keys_erased, "states": states}
        )
        return Erasure(entity, field, streams, keys_erased, states, kept, self.settings.stores.log)

    def mock_events(
        self,
        stream: str,
        rows: int,
        *,
        like: Project | None = None,
        entities: int | None = None,
        days: float | None = None,
        seed: int = 0,
    ) -> list[dict]:
        """``rows`` realistic events of a stream, for an environment with no production data:
        numbers and categories drawn as observed in the history of ``like`` (another
        environment; by default this one; plausible defaults where none was observed), PII
        fields as Faker fakes, keys ``mock-000001``..., ending now. Ingest them to use them."""
        from headwater.privacy.mock import OBSERVED, mock_events, profile

        definition = self.definitions.streams[stream]
        source = like or self
        observed = None
        seen = source.definitions.streams.get(stream)
        if like is not None and (seen is None or seen.version != definition.version):
            raise DefinitionError(
                f"the stream {stream!r} is defined differently where its distributions would "
                "come from; profile an environment with the same definitions"
            )
        if seen is not None:
            history = source.training.history(seen)  # brought up to date first
            if history.num_rows:
                import numpy as np

                rng = np.random.default_rng(seed)
                take = min(history.num_rows, OBSERVED)
                rows_at = np.sort(rng.choice(history.num_rows, take, replace=False))
                observed = profile(definition, history.take(rows_at).to_pandas())
        return mock_events(
            definition,
            rows,
            now_us=self.now(),
            observed=observed,
            entities=entities,
            days=days,
            seed=seed,
        )

    def score_entities(
        self,
        service: str,
        *,
        at: int | None = None,
        entities: Any = None,
        progress: Callable[[int], None] | None = None,
    ) -> Any:
        """Batch scoring of ``entities`` (a DataFrame of keys, optionally times; default:
        every entity of the service) as of ``at`` (UTC microseconds; default now), every
        prediction logged. Returns a pandas DataFrame of keys, times, ids and scores."""
        from headwater.definitions.types import from_micros
        from headwater.serving.batch_scoring import score_entities

        when = from_micros(at if at is not None else self.now())
        return score_entities(self.serving, service, when, entities, progress)

    def run_scheduled(
        self, log: Callable[[str], None], jobs: int = 1
    ) -> tuple[list[tuple[str, int | str]], list[tuple[str, int | str]]]:
        """Train every model, then batch-score every service, whose cron schedule is due:
        (each model with its new version, each service with its rows; or the failure).
        Due models train together (``train_all``: shared training sets, ``jobs``
        processes)."""
        from headwater.project.scheduler import run_due, run_due_scoring

        return run_due(self, log, jobs), run_due_scoring(self, log)

    # -- monitoring ----------------------------------------------------------------------

    def monitor(
        self,
        service: str | None = None,
        *,
        days: float = 30,
        alert: Callable[[dict[str, Any]], None] | None = None,
        act: bool = False,
        progress: Callable[[Progress], None] | None = None,
        log: Callable[[str], None] | None = None,
        team: str | None = None,
    ) -> MonitorRun:
        """Join logged predictions with their ground truth and report the last ``days``.

        The ledger consumes the log from its checkpoints first (a kill resumes without
        counting anything twice); then per version: performance, drift and skew, alerts (to
        ``alert`` and the ``alerts`` stream). ``act`` retrains models whose policy says so
        and promotes challengers that win on live labels. ``team``: only the services that
        team owns (their alerts and actions only).
        """
        from headwater.monitoring.service import run_monitor  # scipy loads only to monitor

        return run_monitor(
            self.monitor_context(),
            service,
            days=days,
            alert=alert,
            act=act,
            progress=progress,
            log=log or (lambda _: None),
            team=team,
        )

    def monitor_context(self) -> MonitorContext:
        """What the monitor, its ledger and its reports read (see ``monitoring/``)."""
        return wiring.monitor_context(
            self.settings,
            self.definitions,
            self.stores,
            self.core,
            self.now,
            lambda: self.serving.logger.flush(),
            lambda model: self.train(model).version,
        )

    def experiment(
        self, service: str, *, days: float = 30, higher_is_better: bool | None = None
    ) -> tuple[list[Any], list[Any]]:
        """Per-variant outcomes of an A/B (or bandit) service over the last ``days``, with
        intervals, and each variant against the control: the test used and a verdict.
        ``higher_is_better`` defaults to the service's setting."""
        from headwater.monitoring.experiment import analyze

        variants = self.definitions.service(service).variants
        if len(variants) < 2:
            raise DefinitionError(
                f"service {service!r} serves one variant ({variants[0].name}): there is "
                "nothing to compare; an experiment needs a Service with routing='ab', "
                "'shadow' or 'bandit' and two or more variants"
            )
        outcomes = self._outcomes(service, days)
        if outcomes["variant"].nunique() < 2:
            raise DefinitionError(
                f"service {service!r} has matured outcomes for fewer than two "
                "variants in the window; wait for labels or widen --days"
            )
        if higher_is_better is None:
            higher_is_better = self.definitions.services[service].higher_is_better
        return analyze(outcomes, higher_is_better=higher_is_better, cluster_col="entity")

    def check(
        self,
        *,
        stream: str | None = None,
        feature: str | None = None,
        limit: int = 100_000,
    ) -> list[Any]:
        """Run the data tests (the expectations of streams and features) now: a stream's on
        its latest ``limit`` events per partition, a feature's on the current values of the
        entities those events name; failures go to the alerts stream (once per test, check
        and day). Returns one ``Result`` per test."""
        from headwater.streaming.datatests import DataTests, check_now

        for kind, name, known in (
            ("stream", stream, self.definitions.streams),
            ("feature", feature, self.definitions.features),
        ):
            if name is not None and name not in known:
                raise DefinitionError(f"no {kind} {name!r}" + did_you_mean(name, list(known)))
        tests = DataTests(self.definitions, self.catalog.plans)
        results, failures = check_now(
            tests,
            self.log,
            lambda plan, keys: list(self.online_store.get_many(plan.id, keys)),
            {p.id: p for p in self.catalog.plans},
            self.now(),
            limit,
            lambda t: (
                (stream is None or (t.kind == "stream" and t.name == stream))
                and (feature is None or (t.kind == "feature" and t.name == feature))
            ),
        )
        self.processor.check_alerts.write(failures, "headwater check")
        return results

    def _window(self, days: float) -> tuple[int, int]:
        """Prediction times of the last ``days``, up to and including now."""
        from headwater.monitoring.ledger import DAY_US

        now = self.now()
        return now - int(days * DAY_US), now + 1

    def _outcomes(self, service: str, days: float) -> pd.DataFrame:
        from headwater.monitoring.monitor import experiment_outcomes

        return experiment_outcomes(self.monitor_context(), service, *self._window(days))

    def experiment_segments(
        self, service: str, *, days: float = 30, higher_is_better: bool | None = None
    ) -> list[dict[str, Any]]:
        """The experiment within each group of the service's (and its models') segments,
        every p-value adjusted for the number of comparisons (Holm), with a verdict each
        (``monitoring.experiment.segment_verdicts``); empty without segments."""
        from headwater.monitoring.experiment import segment_verdicts

        definition = self.definitions.service(service)
        segments = {s.name: s for s in definition.segments}
        for v in definition.variants:
            segments.update({s.name: s for s in v.model.segments})
        if not segments:
            return []
        outcomes = self._outcomes(service, days)
        higher = definition.higher_is_better if higher_is_better is None else higher_is_better
        return segment_verdicts(outcomes, list(segments.values()), higher_is_better=higher)

    def allocation(self, service: str, *, days: float = 30) -> pd.DataFrame:
        """How the service's routing allocated its answers per day over the last ``days``:
        decisions, share and mean logged propensity per variant and model version
        (``monitoring.experiment.allocation``)."""
        from headwater.monitoring.experiment import allocation
        from headwater.monitoring.monitor import logged_predictions

        self.definitions.service(service)  # an unknown name: "did you mean"
        return allocation(logged_predictions(self.monitor_context(), service, *self._window(days)))

    def evaluate_policy(
        self, service: str, policy: str | Mapping[str, float], *, days: float = 30
    ) -> tuple[list[Any], dict[str, Any]]:
        """Off-policy evaluation: the mean reward ``policy`` (a variant's name, ``"a=0.2,
        b=0.8"``, or a mapping of variant to probability) would have earned on the service's
        logged, rewarded decisions of the last ``days``: IPS and self-normalized IPS
        estimates with intervals clustered by entity (``monitoring/offpolicy.py``), and what
        the logging policy earned. Refused where the candidate would choose a variant the
        logging policy never chose."""
        from headwater.monitoring.offpolicy import evaluate, parse_policy

        definition = self.definitions.service(service)
        if definition.candidates is not None:
            if not isinstance(policy, str):
                raise DefinitionError("a ranking's candidate policy is a string: greedy, ...")
            return self._evaluate_ranking(service, policy, days)
        if definition.routing not in ("ab", "bandit"):
            raise DefinitionError(
                f"service {service!r} routes by {definition.routing!r}: its logged decisions "
                "made no random choice between variants, so no other policy can be "
                "evaluated on them; off-policy evaluation needs routing='ab' or 'bandit'"
            )
        names = [v.name for v in definition.variants]
        target = parse_policy(policy, names) if isinstance(policy, str) else dict(policy)
        outcomes = self._outcomes(service, days)
        estimates = evaluate(outcomes, target)
        logged = outcomes.dropna(subset=["propensity"])
        summary = {
            "policy": target,
            "logged_mean": float(logged["outcome"].mean()),
            "logged_share": logged["variant"].value_counts(normalize=True).to_dict(),
            "without_propensity": int(outcomes["propensity"].isna().sum()),
        }
        return estimates, summary

    def _evaluate_ranking(
        self, service: str, policy: str, days: float
    ) -> tuple[list[Any], dict[str, Any]]:
        """Off-policy evaluation of a ranking service's first place: each request's logged
        action is its first candidate, placed there with its logged ``action_propensity``;
        the candidate policy places the best-scored candidate first with probability
        ``1 - rate`` and any candidate with ``rate / n``."""
        from headwater.monitoring.monitor import logged_predictions
        from headwater.monitoring.offpolicy import OffPolicyError, evaluate, ranking_policy

        definition = self.definitions.service(service)
        rate = ranking_policy(policy)
        logged = logged_predictions(self.monitor_context(), service, *self._window(days))
        if logged.empty or "action_propensity" not in logged:
            raise OffPolicyError(
                f"service {service!r} logged no ranking with exploration in the window: "
                "declare Service(..., explore=0.1) so that other candidates are sometimes "
                "placed first"
            )
        logged = logged[~logged["shadow"].astype(bool)]
        n = logged.groupby("ranking_id")["prediction_id"].transform("size")
        first = logged.assign(n=n)[logged["rank"] == 1]
        first = first[first["action_propensity"].notna()]
        if rate > 0 and definition.explore == 0:
            raise OffPolicyError(
                "the logging policy placed only the best-scored candidate first (explore=0): "
                "no logged reward says what another candidate would have earned"
            )
        outcomes = self._outcomes(service, days)
        keys = definition.request_keys  # clustered by who asked: a user's requests go together
        first = first.assign(requester=[repr([e.get(k) for k in keys]) for e in first["entity"]])
        joined = first.drop(columns=["entity"]).merge(
            outcomes[["prediction_id", "outcome"]], on="prediction_id", how="inner"
        )
        top = (joined["score_rank"] == 1).astype(float)
        joined["target"] = (1 - rate) * top + rate / joined["n"]
        joined["action"] = joined["score_rank"].astype(str)
        estimates = evaluate(
            joined,
            None,
            target="target",
            action="action",
            propensity="action_propensity",
            cluster="requester",
        )
        summary = {
            "policy": {"explore": rate},
            "logged_mean": float(joined["outcome"].mean()),
            "logged_share": {"explored": float((joined["score_rank"] != 1).mean())},
            "without_propensity": int(len(logged[logged["rank"] == 1]) - len(first)),
        }
        return estimates, summary

    def report(self, model: str, days: int = 30) -> str:
        """A self-contained HTML report of a model: live performance by day, drift,
        predictions against the reference, experiments."""
        from headwater.monitoring.report import render

        return render(self.monitor_context(), model, days)

    def serve(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        with_processor: bool = False,
        with_scoring: bool = False,
        monitor_every: float = 0,
        tls: tuple[str, str] | None = None,
        announce: Callable[[str], None] | None = None,
        grpc_port: int | None = None,
        workers: int = 1,
        worker: Worker | None = None,
        sock: socket.socket | None = None,
        preload: bool = False,
    ) -> None:
        """Serve the HTTP API until interrupted (default address from ``headwater.toml``),
        optionally with the stream processor, the scoring of trigger streams and a periodic
        monitor (exported on /metrics) running beside it. A non-loopback address needs
        ``[server] auth = "keys"``; ``tls`` is (certificate file, key file); ``announce``
        gets the base URL once the server accepts connections; ``grpc_port`` also serves
        gRPC (the Open Inference Protocol and ``headwater.v1.Predictions``) on that port of
        the same host, with the same keys and TLS.

        ``workers`` > 1 serves from that many processes sharing the port (and the gRPC
        port); the first of them alone runs the processor, stream scoring and monitor.
        ``worker`` and ``sock`` are how the supervisor starts each of them.

        The model versions of required services (``Service(required=True)``) load in the
        background as the server starts; ``preload`` loads every service's. A service whose
        versions are loading answers 503 with the reason; ``/readyz`` reports each one."""
        from headwater.serving.http.server import Task, is_loopback, run_server

        server = self.settings.server
        host = host or server.host
        port = port or server.port
        if not is_loopback(host) and server.auth != "keys":
            raise DefinitionError(
                f"refusing to serve on {host} without authentication: anyone who reaches it "
                'could ingest, read features and predict. Set [server] auth = "keys" in '
                "headwater.toml and create keys (`headwater keys create --admin` for the "
                "first), or serve on 127.0.0.1"
            )
        self.core.ingestor.check_pii_secret()
        tls = tls or (
            (server.tls_cert, server.tls_key) if server.tls_cert and server.tls_key else None
        )
        if workers > 1:
            self._serve_workers(
                host,
                port,
                workers,
                (with_processor, with_scoring, monitor_every, tls, grpc_port, preload),
                announce,
            )
            return
        if workers < 1:
            raise DefinitionError(f"workers must be at least 1, not {workers}")
        app = self.app()
        worker = worker or Worker(0, 1)
        app.state.worker = {
            "index": worker.index,
            "of": worker.of,
            "pid": os.getpid(),
            "tasks": [
                name
                for name, on in (
                    ("processor", with_processor),
                    ("stream scoring", with_scoring),
                    ("monitor", monitor_every > 0),
                )
                if on
            ],
        }
        tasks: list[Task] = []
        if with_processor:

            def process(stop: threading.Event) -> None:
                self.process(forever=True, stop=stop)

            tasks.append(process)
        if with_scoring:
            tasks.append(self.serving.run_stream_scoring)
        if monitor_every > 0:
            from headwater.monitoring.service import monitor_every as every

            ctx = self.monitor_context()
            record = app.state.metrics.record_monitor
            tasks.append(lambda stop: every(ctx, monitor_every, stop, record))

        if preload or any(s.required for s in self.definitions.services.values()):
            self.serving.preload(None if preload else self.serving.required)
        grpc_server = None
        if grpc_port is not None:
            grpc_server = self._grpc(host, grpc_port, tls, shared=worker.of > 1)
            grpc_server.start()

        def freeze() -> None:  # states decoded later leave the collector's generations too
            self.online.freeze_cached_states = True

        try:
            run_server(app, host, port, tasks, freeze, tls, announce, sock)
        finally:
            # on SIGTERM uvicorn has finished its requests in flight; gRPC finishes its own
            # before the prediction log is flushed (``close``): nothing answered is lost
            if grpc_server is not None:
                grpc_server.stop(grace=10).wait()

    def _serve_workers(
        self,
        host: str,
        port: int,
        workers: int,
        options: tuple[Any, ...],
        announce: Callable[[str], None] | None,
    ) -> None:
        """``serve`` from ``workers`` processes: this one supervises them."""
        from headwater.serving.http.workers import listen, serve_workers

        tls = options[3]
        scheme = "https" if tls else "http"
        name = f"[{host}]" if ":" in host else host
        level = logging.getLogger("headwater").getEffectiveLevel()
        with listen(host, port) as sock:
            serve_workers(
                _serve_in_worker,
                (str(self.root), self.environment.name, host, port, level, options),
                workers,
                sock,
                None if announce is None else lambda: announce(f"{scheme}://{name}:{port}"),
            )

    def _grpc(self, host: str, port: int, tls: tuple[str, str] | None, shared: bool = False) -> Any:
        """The gRPC server, bound now (a taken port fails before HTTP starts); ``shared``:
        the port is bound by every worker of the server."""
        server = self.settings.server
        access = self.access if server.auth == "keys" else None
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return wiring.build_grpc(lambda: self.serving, access, server, address, tls, shared)

    # -- sources ---------------------------------------------------------------------------

    def source_runner(self) -> SourceRunner:
        """The runner of the sources this project declares (``headwater source run``)."""
        return wiring.build_source_runner(
            self.settings, self.definitions, self.stores, self.ingest, self.now
        )

    def close(self) -> None:
        if self._serving is not None:
            self._serving.close()
        self.stores.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve_in_worker(
    worker: Worker,
    sock: socket.socket,
    ready: Any,
    root: str,
    env: str,
    host: str,
    port: int,
    log_level: int,
    options: tuple[Any, ...],
) -> None:
    """What each worker process of ``Project.serve(workers=N)`` runs: the first one also
    runs the background tasks; ``ready`` is set once it accepts connections."""
    from headwater.serving import log_format

    log_format.configure(log_level)
    with_processor, with_scoring, monitor_every, tls, grpc_port, preload = options
    tasks = worker.runs_tasks
    with Project(root, env=env) as project:
        project.serve(
            host,
            port,
            with_processor=with_processor and tasks,
            with_scoring=with_scoring and tasks,
            monitor_every=monitor_every if tasks else 0,
            tls=tls,
            announce=lambda _: ready.set(),
            grpc_port=grpc_port,
            worker=worker,
            sock=sock,
            preload=preload,
        )


def _train_in_worker(
    root: str, env: str, model: str, snapshot: dict[str, Any], shared_with: tuple[str, ...]
) -> TrainResult:
    """What each process of ``Project.train_all(jobs=N)`` runs for one model; the history
    was archived by the parent (two processes never archive one stream)."""
    with Project(root, env=env) as project:
        project.core.archiver.read_only = True
        try:
            return project.train(model, snapshot=snapshot, shared_with=shared_with)
        except HeadwaterError as exc:  # the parent gets the message (not every error pickles)
            raise HeadwaterError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - any failure of user code
            raise HeadwaterError(f"{type(exc).__name__}: {exc}") from None


def _process_in_worker(
    stop: threading.Event, root: str, env: str, group: str, settings: dict[str, float]
) -> ProcessStats:
    """What each worker process of ``Project.process(workers=N)`` runs."""
    with Project(root, env=env) as project:
        project.processor.configure(settings)
        return project.process(forever=True, group=group, stop=stop)
