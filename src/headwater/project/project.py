"""``Project``: the user's handle on a project folder; it delegates each concern."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from headwater.definitions import DefinitionError, Model
from headwater.definitions.types import to_micros
from headwater.errors import did_you_mean
from headwater.features.catalog import FeatureCatalog, UnknownFeatureError
from headwater.history.archiver import Archiver
from headwater.ingestion.service import Ingestor, IngestResult
from headwater.log.base import GroupLog, SoleMember
from headwater.project.config import Settings, load_settings
from headwater.project.loader import Definitions, load_definitions
from headwater.project.planning import Plan, apply_plan, make_plan
from headwater.registry.registry import Registry
from headwater.stores.urls import open_backend
from headwater.streaming.online import OnlineFeatures
from headwater.streaming.processor import ProcessingError, Processor, ProcessStats
from headwater.training.sets import TrainingSets, to_arrow

if TYPE_CHECKING:
    from headwater.training.trainer import TrainResult

Clock = Callable[[], "int | datetime"]
INGEST_CHUNK = 10_000
TABLE_CHUNK = 100_000
_LOGGER = logging.getLogger("headwater.project")


def system_clock() -> int:
    return time.time_ns() // 1000


class Project:
    """A headwater project: definitions plus the stores named in ``headwater.toml``.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "headwater.toml").write_text('[project]\\ndefinitions = []\\n')
    >>> Project(folder).plan().summary()
    {}
    """

    def __init__(self, path: str | Path = ".", *, clock: Clock | None = None) -> None:
        self.settings: Settings = load_settings(path)
        self.root = self.settings.root
        self._clock_source = clock
        self.definitions: Definitions = load_definitions(self.root, self.settings.definitions)
        self.catalog = FeatureCatalog(
            self.definitions.features.values(), self.definitions.derived.values()
        )
        stores = self.settings.stores
        self.log = open_backend("log", stores.log, self.root)
        self.online_store = open_backend("online", stores.online, self.root)
        self.offline_store = open_backend("offline", stores.offline, self.root)
        self.metadata = open_backend("metadata", stores.metadata, self.root)
        self.ingestor = Ingestor(
            self.log, self.definitions.streams, self.now, self.settings.ingest.max_future_us
        )
        self.processor = Processor(self.log, self.online_store, self.catalog.plans, self.now)
        sorted_history = self.settings.offline.sorted_history
        sorted_by: dict[str, list[tuple[str, ...]]] = {}  # the key tuples features read by
        for plan in self.catalog.plans:
            tuples = sorted_by.setdefault(plan.stream.name, [])
            if plan.entity.keys not in tuples:
                tuples.append(plan.entity.keys)
        self.archiver = Archiver(
            self.log, self.offline_store, sorted_history=sorted_history, sorted_by=sorted_by
        )
        self.online = OnlineFeatures(self.online_store, self.catalog, self.now)
        self.training = TrainingSets(
            self.catalog,
            self.offline_store,
            self.archiver,
            self.definitions.streams,
            engine=self.settings.offline.engine,
            spark=self.settings.offline.spark,
            sorted_history=sorted_history,
        )
        self.registry = Registry(self.metadata, self.root / ".headwater" / "artifacts")
        self._serving: Any = None
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
        try:
            return self.definitions.models[name]
        except KeyError:
            raise DefinitionError(
                f"unknown model {name!r}" + did_you_mean(name, list(self.definitions.models))
            ) from None

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

    def apply(self) -> Plan:
        """Register the definitions (content-hash versions); refuses unsafe removals."""
        return apply_plan(self.definitions.all(), self.metadata, self.now())

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
    ) -> ProcessStats:
        """Bring the online store up to date with the log (or keep it so until ``stop``).

        ``rebuild`` first forgets the feature sets' online state and checkpoints, so the
        whole log is replayed. ``forever`` on a log with consumer groups (Kafka) joins the
        group ``group`` (default ``headwater.<project name>.processor``) and processes the
        partitions it assigns, so processes on several hosts share the work; ``workers``
        starts that many worker processes here, each a member of the group.
        """
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
            self.processor.clear()
        if not forever:
            return self.processor.run_until_caught_up(progress, stop)
        stop = stop or threading.Event()
        group = group or f"headwater.{self.settings.name}.processor"
        if workers > 1:
            return _run_workers(self.root, group, workers, self.processor.settings(), stop)
        streams = self.processor.streams
        member = self.log.join(group, streams) if sharing else SoleMember(self.log, streams)
        try:
            return self.processor.run_forever(stop, membership=member)
        finally:
            member.close()

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
        self, model: str, *, reproduce: int | None = None, log: Callable[[str], None] | None = None
    ) -> TrainResult:
        """Run a model's training pipeline and register the new version.

        ``reproduce`` rebuilds the training data of an earlier version from the log.
        """
        from headwater.training.trainer import Trainer  # scikit-learn loads only to train

        trainer = Trainer(self, self.registry, log or (lambda _: None))
        result = trainer.train(self.model(model), reproduce=reproduce)
        uri = self.settings.tracking.mlflow_uri
        if uri:
            from headwater.registry.mlflow_mirror import mirror

            mirror(uri, result.run, self.registry.version(model, result.version))
        return result

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
    def serving(self) -> Any:
        """The serving runtime (loaded models, predictors, the prediction logger)."""
        if self._serving is None:
            from headwater.serving.runtime import Serving

            self._serving = Serving(self)
        return self._serving

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
        keys = self.serving.predictor(service).service.candidates.keys
        return ranking.response(keys)

    def entities(self, entity: str) -> Any:
        """Every key of an entity seen in the streams of its features (a pandas DataFrame)."""
        import pandas as pd

        keys = self.definitions.entities[entity].keys
        frames = []
        for plan in self.catalog.plans:
            if plan.entity.name == entity:
                history = self.training.history(plan.stream)
                if history.num_rows:
                    frames.append(history.select(list(keys)).to_pandas().astype(str))
        if not frames:
            return pd.DataFrame(columns=list(keys))
        return pd.concat(frames).drop_duplicates().sort_values(list(keys), ignore_index=True)

    def score(self, service: str, spine: Any, *, time_column: str = "timestamp") -> Any:
        """Batch scoring: each spine row's entity as of its time, from the offline store."""
        return self.serving.score_batch(service, spine, time_column)

    def close(self) -> None:
        if self._serving is not None:
            self._serving.close()
        for store in (self.log, self.online_store, self.metadata):
            store.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run_workers(
    root: Path, group: str, workers: int, settings: dict[str, float], stop: threading.Event
) -> ProcessStats:
    """Run ``workers`` processes (spawned) that each process the project in ``group``, until
    ``stop`` is set; a worker that dies leaves its partitions to the others."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    done = context.Event()
    results = context.SimpleQueue()
    processes = [
        context.Process(
            target=_worker,
            args=(str(root), group, settings, done, results),
            name=f"headwater-worker-{i}",
            daemon=True,
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        running = set(processes)
        while running and not stop.wait(0.5):
            for process in [p for p in running if not p.is_alive()]:
                running.discard(process)
                _LOGGER.warning(
                    "%s exited (code %s); the others take over its partitions",
                    process.name,
                    process.exitcode,
                )
        if not running:
            raise ProcessingError(f"all {workers} workers exited; see their errors above")
    finally:
        done.set()
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.terminate()
    total = ProcessStats()
    while not results.empty():
        events, batches = results.get()
        total.events += events
        total.batches += batches
    return total


def _worker(root: str, group: str, settings: dict[str, float], done: Any, results: Any) -> None:
    """One process of ``_run_workers``: it stops when ``done`` is set or its parent is gone,
    and leaves Ctrl-C to the parent (which then sets ``done``)."""
    import multiprocessing
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    stop = threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            if parent is not None and not parent.is_alive():
                break
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    with Project(root) as project:
        project.processor.configure(settings)
        stats = project.process(forever=True, group=group, stop=stop)
    results.put((stats.events, stats.batches))
