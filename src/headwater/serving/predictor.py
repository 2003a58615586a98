"""The one code path of every prediction: features -> model -> log the prediction.

HTTP, batch scoring, stream scoring and in-process calls all end in ``Predictor.score``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from headwater.definitions import DefinitionError, Service, Variant
from headwater.features.plan import entity_key
from headwater.log.base import Log
from headwater.log.ids import new_id
from headwater.serving.prediction_log import PredictionLogger
from headwater.serving.routing import Routed, Router
from headwater.serving.scoring import NoModelVersion, ScorerCache
from headwater.streaming.online import MissingKeyError, OnlineFeatures, any_known


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
    ranked: dict[str, Any] = field(default_factory=dict, repr=False)  # ranking_id, rank, ...
    propensity: float | None = None  # P(routing chose this variant); None: pinned or shadow
    draws: int | None = None  # Monte Carlo draws behind the propensity (Thompson sampling)

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
        "ranking_id",
        "rank",
        "returned",
        "propensity",
        "propensity_draws",
        "chosen",
        "alternative_to",
        "score_rank",
        "action_propensity",
    }
)


@dataclass
class Ranking:
    """A ranking request's answer: the best ``k`` candidates, best first."""

    ranking_id: str
    variant: str
    top: list[Prediction]
    scored: int  # how many candidates were scored (and logged)

    def response(self, candidate_keys: Sequence[str]) -> dict[str, Any]:
        first = self.top[0]
        return {
            "ranking_id": self.ranking_id,
            "variant": self.variant,
            "model": first.model,
            "model_version": first.model_version,
            "scored": self.scored,
            "items": [
                {
                    **{key: p.entity[key] for key in candidate_keys},
                    "rank": p.ranked["rank"],
                    "score": p.score,
                    "prediction_id": p.prediction_id,
                    "unknown_entity": p.unknown_entity,
                }
                for p in self.top
            ],
        }


def _set_ranks(
    predictions: list[Prediction],
    ranking: tuple[str, int],
    explore: float = 0.0,
    explored: int | None = None,
) -> None:
    """Rank 1 is the best score; ties keep the candidates' order (a stable sort). With
    ``explore``, the candidate ``explored`` (drawn by the router, or None) takes the first
    place, and each candidate records its rank by score and the probability that it was
    placed first: ``(1 - explore) * [best by score] + explore / n``."""
    ranking_id, k = ranking
    order = sorted(range(len(predictions)), key=lambda i: -predictions[i].score)
    by_score = {i: r for r, i in enumerate(order, start=1)}
    if explored is not None:
        order.remove(explored)
        order.insert(0, explored)
    n = len(predictions)
    for rank, i in enumerate(order, start=1):
        ranked = {"ranking_id": ranking_id, "rank": rank, "returned": rank <= k}
        if explore:
            top = by_score[i] == 1
            ranked.update(
                score_rank=by_score[i], action_propensity=(1 - explore) * top + explore / n
            )
        predictions[i].ranked = ranked


def _check_keys(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], what: str = "row") -> None:
    for i, row in enumerate(rows):
        for k in keys:
            if row.get(k) is None or isinstance(row.get(k), dict | list):
                raise MissingKeyError(f"{what} {i} needs entity key {k!r} (a string or number)")


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
        self.router = Router(service, log, seed, versions=self._version)
        self.last_timings = Timings()
        self._shadow_pool = ThreadPoolExecutor(1, thread_name_prefix=f"shadow-{service.name}")
        self.shadow_errors = 0

    def _version(self, variant: Variant) -> int | None:
        """The model version a variant serves now (None while it has none loaded)."""
        try:
            return self._scorers.get(variant.model, variant.alias).version
        except NoModelVersion:
            return None

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
        self,
        rows: Sequence[Mapping[str, Any]],
        path: str,
        at_us: int | None = None,
        variant: str | None = None,
    ) -> list[Prediction]:
        """Online: features from the online store at now (or ``at_us``); ``variant`` pins
        every row to one variant instead of routing (a request for one model version)."""
        _check_keys(rows, self.service.entity.keys)
        rows = self._online.entity_keys.rows(rows)  # PII keys: logged as their pseudonyms
        routed: list[Routed] | None = None
        if variant is None:
            routed = self._route(rows)
            chosen = [r.variant for r in routed]
        else:
            pinned = next(v for v in self.service.variants if v.name == variant)
            chosen = [pinned] * len(rows)
        needed = list(dict.fromkeys(chosen))
        start = time.perf_counter()
        t = self._clock() if at_us is None else at_us
        names = self.features_of(needed, self._optional())
        values, known = self._online.get_with_presence(rows, names, t)
        self.last_timings.features_s = time.perf_counter() - start
        return self.score(rows, values, known, chosen, path, features_at=t, routed=routed)

    def _optional(self) -> tuple[Variant, ...]:
        """The variants scored off the request's path: shadows, or with
        ``score_alternatives`` every variant (each row's unchosen ones)."""
        if self.service.score_alternatives:
            return self.service.variants
        return self.router.shadows()

    def rank(
        self,
        request: Mapping[str, Any],
        candidates: Sequence[Any],
        k: int | None = None,
        path: str = "http",
        at_us: int | None = None,
        variant: str | None = None,
    ) -> Ranking:
        """Score every candidate for one request entity; return the ``k`` best in order.

        ``candidates``: the candidate entity's key values (``["i1", "i2"]``) or objects with
        its keys (``[{"item_id": "i1"}]``). Every candidate's prediction is logged, with the
        request's ``ranking_id``, its ``rank`` and whether it was ``returned``. ``variant``
        pins the request to one variant instead of routing it.
        """
        service = self.service
        if service.candidates is None:
            raise DefinitionError(
                f"service {service.name!r} does not rank: declare it with candidates=<entity>"
            )
        k = service.k if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise MissingKeyError(f"k must be a positive whole number, not {k!r}")
        if not candidates:
            raise MissingKeyError("send at least one candidate")
        if len(candidates) > service.max_candidates:
            raise MissingKeyError(
                f"{len(candidates)} candidates is more than this service's max_candidates "
                f"({service.max_candidates})"
            )
        _check_keys([request], service.request_keys, what="request")
        request = self._online.entity_keys.rows([request])[0]  # PII keys: as stored
        cand_keys = service.candidates.keys
        rows = []
        for i, c in enumerate(candidates):
            if isinstance(c, Mapping):
                fields = dict(c)
            elif len(cand_keys) == 1:
                fields = {cand_keys[0]: c}
            else:
                raise MissingKeyError(f"candidate {i} must be an object with keys {cand_keys}")
            rows.append({**request, **fields})
        _check_keys(rows, service.entity.keys, what="candidate")
        keyed = self._online.entity_keys.rows(rows)  # PII candidate keys: as stored
        ranking_id = new_id()
        routed = self._route([request]) if variant is None else None
        chosen = (
            routed[0].variant
            if routed is not None
            else next(v for v in service.variants if v.name == variant)
        )
        start = time.perf_counter()
        t = self._clock() if at_us is None else at_us
        names = self.features_of([chosen], self._optional())
        values, by_entity = self._online.get_with_entities(keyed, names, t)
        # a candidate is unknown when its own entity has no state (a new item), whatever is
        # known of the user or of the pair; without candidate features, when nothing is
        candidate = by_entity.get(service.candidates.name)
        known = candidate if candidate is not None else any_known(by_entity, len(keyed))
        self.last_timings.features_s = time.perf_counter() - start
        scored = self.score(
            keyed,
            values,
            known,
            [chosen] * len(keyed),
            path,
            features_at=t,
            ranking=(ranking_id, k),
            routed=None if routed is None else routed * len(keyed),
            explored=self.router.explore(len(keyed)) if service.explore else None,
        )
        # score() ranked every candidate: only the k returned ones need ordering here
        top = sorted((p for p in scored if p.ranked["returned"]), key=lambda p: p.ranked["rank"])
        return Ranking(ranking_id, chosen.name, top, len(keyed))

    def _route(self, rows: Sequence[Mapping[str, Any]]) -> list[Routed]:
        if self.service.routing not in ("ab", "bandit"):  # no key decides: nothing to hash
            return [self.router.route("")] * len(rows)
        keys = self.service.request_keys
        return [self.router.route(entity_key([row[k] for k in keys])) for row in rows]

    def score(
        self,
        rows: Sequence[Mapping[str, Any]],
        values: list[dict[str, Any]],
        known: list[bool],
        chosen: list[Variant] | None,
        path: str,
        features_at: int | Sequence[int] | None = None,
        ranking: tuple[str, int] | None = None,
        routed: Sequence[Routed] | None = None,
        explored: int | None = None,
    ) -> list[Prediction]:
        """Score rows whose feature values are given; log every prediction (and shadows).

        ``features_at``: when the values were evaluated (one time, or one per row), recorded
        so that the monitor can recompute them offline and measure skew. ``ranking``: the
        rows are one request's candidates, (ranking id, k): each record gets its rank.
        ``routed``: how each row's variant was chosen (its propensity), when it was routed.
        """
        service = self.service
        if chosen is None:
            routed = self._route(rows)
            chosen = [r.variant for r in routed]
        if service.defaults:
            for i, is_known in enumerate(known):
                if not is_known:
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
        # (one time for every row unless a list: cheaper to test than a Sequence)
        at = features_at if isinstance(features_at, list | tuple) else [features_at] * len(rows)
        for p, when in zip(out, at, strict=True):
            p.features_at_us = when
        if routed is not None:
            for p, r in zip(out, routed, strict=True):
                p.propensity, p.draws = r.propensity, r.draws
        if ranking is not None:
            _set_ranks(out, ranking, service.explore, explored)
        self._logger.log([self._record(p, path, now, shadow=False) for p in out])
        shadows = self.router.shadows()
        if shadows:
            # Scored on the shadow thread, off the request's path: logged, never returned.
            self._shadow_pool.submit(
                self._score_shadows, shadows, rows, values, known, path, now, ranking
            )
        if service.score_alternatives:
            self._shadow_pool.submit(
                self._score_alternatives, rows, values, known, chosen, out, path, now
            )
        return out

    def _score_alternatives(
        self,
        rows: Sequence[Mapping[str, Any]],
        values: list[dict[str, Any]],
        known: list[bool],
        chosen: Sequence[Variant],
        answered: list[Prediction],
        path: str,
        now: int,
    ) -> None:
        """Every variant a row's routing passed over, scored on the same features and
        logged (not chosen, its probability of being chosen, the answer it was the
        alternative to): what off-policy estimators with a reward model need."""
        probabilities = self.router.probabilities()
        for variant in self.service.variants:
            idx = [i for i, v in enumerate(chosen) if v is not variant]
            if not idx:
                continue
            try:
                extra = self._score_variant(variant, rows, values, known, idx)
            except Exception:  # noqa: BLE001 - never touches the answer
                self.shadow_errors += 1
                continue
            records = []
            for i, p in zip(idx, extra, strict=True):
                p.propensity = probabilities.get(variant.name)
                record = self._record(p, path, now, shadow=True)
                record["alternative_to"] = answered[i].prediction_id
                records.append(record)
            self._logger.log(records)

    def _score_shadows(
        self,
        shadows: Sequence[Variant],
        rows: Sequence[Mapping[str, Any]],
        values: list[dict[str, Any]],
        known: list[bool],
        path: str,
        now: int,
        ranking: tuple[str, int] | None = None,
    ) -> None:
        for shadow in shadows:
            try:
                extra = self._score_variant(shadow, rows, values, known, list(range(len(rows))))
            except Exception:  # noqa: BLE001 - a failing shadow must never touch the champion
                self.shadow_errors += 1
                continue
            if ranking is not None:
                _set_ranks(extra, (ranking[0], 0))  # ranked as it would have, none returned
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
                new_id(),
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
            "chosen": not shadow,
            "propensity": p.propensity,
            **({"propensity_draws": p.draws} if p.draws is not None else {}),
            "path": path,
            "ts_us": now,
            "features_at_us": p.features_at_us,
            **p.ranked,
            # the entity's keys at the top level too, so that features (e.g. exposures) can be
            # declared on the predictions stream like on any other
            **{k: v for k, v in p.entity.items() if k not in _RECORD_FIELDS},
        }
