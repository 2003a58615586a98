"""The one code path of every prediction: features -> model -> log the prediction.

HTTP, batch scoring, stream scoring and in-process calls all end in ``Predictor.score``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from headwater.definitions import Service, Variant
from headwater.features.online import MissingKeyError, OnlineFeatures
from headwater.features.plan import entity_key
from headwater.log.base import Log
from headwater.serving.logger import PredictionLogger
from headwater.serving.routing import Router
from headwater.serving.scoring import NoModelVersion, ScorerCache


@dataclass
class Prediction:
    """What a caller gets back, and (with the features) what the log records."""

    prediction_id: str
    service: str
    variant: str
    model: str
    model_version: int
    entity: dict[str, Any]
    score: float
    unknown_entity: bool
    features: dict[str, Any] = field(repr=False)
    context: dict[str, Any] = field(repr=False)
    features_at_us: int | None = None

    def response(self) -> dict[str, Any]:
        return {
            "prediction_id": self.prediction_id,
            "score": self.score,
            "variant": self.variant,
            "model": self.model,
            "model_version": self.model_version,
            "entity": self.entity,
            "unknown_entity": self.unknown_entity,
        }


_RECORD_FIELDS = frozenset(
    {
        "prediction_id",
        "service",
        "variant",
        "model",
        "model_version",
        "entity",
        "features",
        "context",
        "output",
        "unknown_entity",
        "shadow",
        "path",
        "ts_us",
        "features_at_us",
    }
)


@dataclass
class Timings:
    features_s: float = 0.0
    model_s: float = 0.0


class Predictor:
    """Serves one service: routes, fetches features, scores, logs."""

    def __init__(
        self,
        service: Service,
        online: OnlineFeatures,
        scorers: ScorerCache,
        log: Log,
        logger: PredictionLogger,
        clock: Callable[[], int],
        seed: int | None = None,
    ) -> None:
        self.service, self._online, self._scorers = service, online, scorers
        self._logger, self._clock = logger, clock
        self.router = Router(service, log, seed)
        self.last_timings = Timings()
        self._shadow_pool = ThreadPoolExecutor(1, thread_name_prefix=f"shadow-{service.name}")
        self.shadow_errors = 0

    def features_of(
        self, variants: Sequence[Variant], optional: Sequence[Variant] = ()
    ) -> list[str]:
        """The features the variants need; ``optional`` ones (shadows) are skipped while
        their alias points at no version yet."""
        names: list[str] = []
        for v in variants:
            names += self._scorers.get(v.model, v.alias).signature.features
        for v in optional:
            try:
                names += self._scorers.get(v.model, v.alias).signature.features
            except NoModelVersion:
                continue
        return list(dict.fromkeys(names))

    def predict(
        self, rows: Sequence[Mapping[str, Any]], path: str, at_us: int | None = None
    ) -> list[Prediction]:
        """Online: features from the online store at now (or ``at_us``)."""
        keys = self.service.entity.keys
        for i, row in enumerate(rows):
            for k in keys:
                if row.get(k) is None or isinstance(row.get(k), dict | list):
                    raise MissingKeyError(f"row {i} needs entity key {k!r} (a string or number)")
        chosen = [self.router.choose(entity_key([row[k] for k in keys])) for row in rows]
        needed = list(dict.fromkeys(chosen))
        start = time.perf_counter()
        t = self._clock() if at_us is None else at_us
        names = self.features_of(needed, self.router.shadows())
        values, known = self._online.get_with_presence(rows, names, t)
        self.last_timings.features_s = time.perf_counter() - start
        return self.score(rows, values, known, chosen, path, features_at=t)

    def score(
        self,
        rows: Sequence[Mapping[str, Any]],
        values: list[dict[str, Any]],
        known: list[bool],
        chosen: list[Variant] | None,
        path: str,
        features_at: int | Sequence[int] | None = None,
    ) -> list[Prediction]:
        """Score rows whose feature values are given; log every prediction (and shadows).

        ``features_at``: when the values were evaluated (one time, or one per row), recorded
        so that the monitor can recompute them offline and measure skew.
        """
        service = self.service
        if chosen is None:
            keys = service.entity.keys
            chosen = [self.router.choose(entity_key([row[k] for k in keys])) for row in rows]
        for i, is_known in enumerate(known):
            if not is_known and service.defaults:
                values[i] = {**values[i], **service.defaults}
        start = time.perf_counter()
        out: list[Prediction] = [None] * len(rows)  # type: ignore[list-item]
        for variant in dict.fromkeys(chosen):
            idx = [i for i, v in enumerate(chosen) if v is variant]
            out_part = self._score_variant(variant, rows, values, known, idx)
            for i, p in zip(idx, out_part, strict=True):
                out[i] = p
        self.last_timings.model_s = time.perf_counter() - start
        now = self._clock()
        at = [features_at] * len(rows) if not isinstance(features_at, Sequence) else features_at
        for p, when in zip(out, at, strict=True):
            p.features_at_us = when
        self._logger.log([self._record(p, path, now, shadow=False) for p in out])
        shadows = self.router.shadows()
        if shadows:
            # Scored on the shadow thread, off the request's path: logged, never returned.
            self._shadow_pool.submit(self._score_shadows, shadows, rows, values, known, path, now)
        return out

    def _score_shadows(
        self,
        shadows: Sequence[Variant],
        rows: Sequence[Mapping[str, Any]],
        values: list[dict[str, Any]],
        known: list[bool],
        path: str,
        now: int,
    ) -> None:
        for shadow in shadows:
            try:
                extra = self._score_variant(shadow, rows, values, known, list(range(len(rows))))
            except Exception:  # noqa: BLE001 - a failing shadow must never touch the champion
                self.shadow_errors += 1
                continue
            self._logger.log([self._record(p, path, now, shadow=True) for p in extra])

    def drain(self) -> None:
        """Wait for shadow scoring submitted so far (tests and shutdown)."""
        self._shadow_pool.submit(lambda: None).result()

    def _score_variant(
        self,
        variant: Variant,
        rows: Sequence[Mapping[str, Any]],
        values: list[dict[str, Any]],
        known: list[bool],
        idx: list[int],
    ) -> list[Prediction]:
        scorer = self._scorers.get(variant.model, variant.alias)
        feats = [{f: values[i].get(f) for f in scorer.signature.features} for i in idx]
        scores = scorer.score(feats)
        keys, context = self.service.entity.keys, self.service.context
        return [
            Prediction(
                uuid.uuid4().hex,
                self.service.name,
                variant.name,
                scorer.model,
                scorer.version,
                {k: rows[i][k] for k in keys},
                float(score),
                not known[i],
                f,
                {c: rows[i].get(c) for c in context},
            )
            for i, f, score in zip(idx, feats, scores, strict=True)
        ]

    def _record(self, p: Prediction, path: str, now: int, shadow: bool) -> dict[str, Any]:
        return {
            "prediction_id": p.prediction_id,
            "service": p.service,
            "variant": p.variant,
            "model": p.model,
            "model_version": p.model_version,
            "entity": p.entity,
            "features": p.features,
            "context": p.context,
            "output": p.score,
            "unknown_entity": p.unknown_entity,
            "shadow": shadow,
            "path": path,
            "ts_us": now,
            "features_at_us": p.features_at_us,
            # the entity's keys at the top level too, so that features (e.g. exposures) can be
            # declared on the predictions stream like on any other
            **{k: v for k, v in p.entity.items() if k not in _RECORD_FIELDS},
        }
