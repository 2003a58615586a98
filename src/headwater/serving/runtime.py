"""Everything that serves predictions for a project: loaded models, predictors, the logger,
batch scoring and stream scoring, behind one object the Project and the HTTP app share."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
import pandas as pd

from headwater.definitions import DefinitionError, Entity, Service
from headwater.errors import did_you_mean
from headwater.features.plan import entity_key
from headwater.log.base import Log, NewRecord, partition_name
from headwater.registry.registry import Registry
from headwater.serving.prediction_log import LogAddress, PredictionLogger
from headwater.serving.predictor import Prediction, Predictor, Ranking
from headwater.serving.scoring import LoadState, ScorerCache
from headwater.stores.online.base import OnlineStore
from headwater.streaming.online import OnlineFeatures
from headwater.training.sets import TrainingSets

OUTPUT_BATCH = 1000


class UnknownServiceError(DefinitionError, LookupError):
    """A prediction for a service the project does not declare."""


class Serving:
    """Predictions of a project's services: the four ways in (in-process, HTTP, batch,
    stream) share its predictors, loaded models and prediction logger."""

    def __init__(
        self,
        services: Mapping[str, Service],
        registry: Registry,
        log: Log,
        online: OnlineFeatures,
        online_store: OnlineStore,
        training: TrainingSets,
        clock: Callable[[], int],
        refresh_seconds: float = 1.0,
        log_address: LogAddress | None = None,
    ) -> None:
        self.services = services
        self._log, self._online, self._online_store = log, online, online_store
        self._training, self._now = training, clock
        self.scorers = ScorerCache(registry, refresh_seconds)
        self.logger = PredictionLogger(log, clock, address=log_address)
        self._predictors: dict[str, Predictor] = {}
        self._lock = threading.Lock()

    def service(self, name: str) -> Service:
        services = self.services
        if name not in services:
            raise UnknownServiceError(
                f"unknown service {name!r}" + did_you_mean(name, list(services))
            )
        return services[name]

    def predictor(self, name: str) -> Predictor:
        found = self._predictors.get(name)
        if found is None:
            with self._lock:
                found = self._predictors.get(name)
                if found is None:
                    found = self._predictors[name] = Predictor(
                        self.service(name),
                        self._online,
                        self.scorers,
                        self._log,
                        self.logger,
                        self._now,
                    )
        return found

    def predict(
        self, service: str, rows: Sequence[Mapping[str, Any]], path: str
    ) -> list[Prediction]:
        return self.predictor(service).predict(rows, path)

    def rank(
        self,
        service: str,
        request: Mapping[str, Any],
        candidates: Sequence[Any],
        k: int | None = None,
        path: str = "inprocess",
    ) -> Ranking:
        return self.predictor(service).rank(request, candidates, k, path)

    # -- readiness -------------------------------------------------------------------------

    def preload(self, names: Sequence[str] | None = None) -> list[str]:
        """Load the model versions of these services (default: all) in the background;
        returns the services preloaded. Until its versions are loaded a service answers 503
        with the reason (``ModelLoading``)."""
        chosen = list(self.services) if names is None else [self.service(n).name for n in names]
        self.scorers.preload(
            (v.model.name, v.alias) for n in chosen for v in self.services[n].variants
        )
        return chosen

    @property
    def required(self) -> list[str]:
        """The services the server's readiness waits for (``Service(required=True)``)."""
        return [n for n, s in self.services.items() if s.required]

    def readiness(self, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Each service's readiness, without loading anything (one registry read for all):
        ``ready`` when every variant's version is loaded, or registered and loaded at the
        first call; a required service is ready only once loaded (its load starts here if
        it has not started)."""
        chosen = list(self.services) if names is None else [self.service(n).name for n in names]
        required = [n for n in chosen if self.services[n].required]
        if required:
            self.preload(required)
        states = self.scorers.states(
            (v.model.name, v.alias) for n in chosen for v in self.services[n].variants
        )
        out: dict[str, dict[str, Any]] = {}
        for name in chosen:
            service = self.services[name]
            variants = {v.name: states[(v.model.name, v.alias)] for v in service.variants}
            ok = all(
                s.status == "loaded" if service.required else s.ready for s in variants.values()
            )
            entry: dict[str, Any] = {
                "ready": ok,
                "required": service.required,
                "owner": service.owner,
                "variants": {n: s.as_dict() for n, s in variants.items()},
            }
            if not ok:
                entry["reason"] = _reason(variants)
            out[name] = entry
        return out

    # -- batch -----------------------------------------------------------------------------

    def entities(self, entity: Entity) -> pd.DataFrame:
        """Every key of ``entity`` in the history of its features' streams."""
        frame: pd.DataFrame = self._training.entities(entity)
        return frame

    def score_batch(self, service: str, spine: Any, time_column: str = "timestamp") -> pd.DataFrame:
        """Score entities as of each spine row's time, from the offline store, logged."""
        predictor = self.predictor(service)
        s = predictor.service
        features = predictor.features_of(list(s.variants))
        table = self._training.build(spine, features, time_column).to_pandas()  # PII keys
        # come back as their pseudonyms: logged so
        rows = table.to_dict("records")
        values = [{f: _plain(r[f]) for f in features} for r in rows]
        known = [True] * len(rows)
        times = [int(pd.Timestamp(r[time_column]).value // 1000) for r in rows]
        preds = predictor.score(rows, values, known, None, "batch", features_at=times)
        out = table.drop(columns=features)
        for column in ("prediction_id", "score", "variant", "model_version"):
            out[column] = [getattr(p, column) for p in preds]
        return out

    # -- streams ---------------------------------------------------------------------------

    def score_stream(self, service: str, batch_size: int = 1000) -> int:
        """Score every trigger event not yet scored; publish to the output stream.

        Outputs carry the event id ``{service}:{trigger offset}`` (``{service}:{partition}:
        {offset}`` beyond partition 0), so on a log that deduplicates ids (the embedded one)
        a replay after a crash appends nothing twice; the checkpoint of each trigger
        partition moves only after its outputs are durable. On Kafka, which cannot dedupe,
        a crash between the two repeats that batch's outputs (at-least-once; consumers
        dedupe on the id).
        """
        predictor = self.predictor(service)
        s = predictor.service
        if s.trigger is None or s.output is None:
            raise DefinitionError(f"service {service!r} has no trigger stream")
        output = s.output
        log, store = self._log, self._online_store
        keys = s.entity.keys
        done = 0
        for partition in range(log.partitions(s.trigger.name)):
            name = partition_name(f"score:{service}", partition)
            while True:
                start = store.checkpoints([name]).get(name, 0)
                records = log.read(s.trigger.name, start, batch_size, partition)
                if not records:
                    break
                rows = [orjson.loads(r.payload) for r in records]
                preds = predictor.predict(rows, "stream")
                now = self._now()
                outputs = [
                    NewRecord(
                        f"{service}:{r.offset}"
                        if partition == 0
                        else f"{service}:{partition}:{r.offset}",
                        now,
                        orjson.dumps(
                            {
                                **pred.response(),
                                "trigger_offset": r.offset,
                                "trigger_partition": partition,
                            }
                        ),
                        key=entity_key([row[k] for k in keys]),
                    )
                    for r, row, pred in zip(records, rows, preds, strict=True)
                ]
                log.append(output, outputs, now)
                store.write({}, {name: records[-1].offset + 1})
                done += len(records)
        return done

    def run_stream_scoring(
        self,
        stop: threading.Event,
        poll_seconds: float = 0.2,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        triggered = [n for n, s in self.services.items() if s.trigger]
        while not stop.is_set():
            busy = 0
            for name in triggered:
                try:
                    busy += self.score_stream(name)
                except Exception as exc:  # noqa: BLE001 - keep the other services scoring
                    if on_error is not None:
                        on_error(exc)
            if not busy:
                stop.wait(poll_seconds)

    def close(self) -> None:
        self.scorers.close()
        for predictor in self._predictors.values():
            predictor.drain()
        self.logger.close()


def _reason(variants: Mapping[str, LoadState]) -> str:
    for name, state in variants.items():
        if state.status == "loading":
            return f"variant {name!r}: model {state.model!r} is loading"
        if state.status in ("missing", "failed"):
            return f"variant {name!r}: {state.reason}"
    return "loading"  # a required service whose versions are registered, not yet loaded


def _plain(value: Any) -> Any:
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        return value
    return value.item() if hasattr(value, "item") else value
