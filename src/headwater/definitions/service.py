"""Services: what callers call — a name, the model versions behind it, and how to route."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from headwater.definitions.base import Definition, check_name
from headwater.definitions.entity import Entity
from headwater.definitions.model import Model
from headwater.definitions.stream import Stream
from headwater.definitions.training import Segment, segments_of
from headwater.errors import DefinitionError, did_you_mean

ROUTINGS = ("champion", "ab", "shadow", "bandit")
RESERVED_STREAMS = ("predictions", "_dead_letter")


@dataclass(frozen=True)
class Variant:
    """One model version behind a service, by registry alias (or version number)."""

    name: str
    model: Model
    alias: str = "champion"
    weight: float = 1.0

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model.name,
            "alias": self.alias,
            "weight": self.weight,
        }


@dataclass(frozen=True)
class Bandit:
    """Learn which variant to serve from a reward stream (events with ``prediction_id`` and a
    ``reward_field``): Thompson sampling, or epsilon-greedy.

    ``reward``: "binary" (0/1 rewards, Beta posteriors with ``prior=(alpha, beta)``, default
    (1, 1)) or "continuous" (any number, e.g. revenue: a normal posterior of the mean with
    ``prior=(mean, weight)``, default (0, 1): the prior counts as ``weight`` rewards of
    ``mean``). Posteriors are kept per model version: a variant whose alias moves to a new
    version starts from the prior plus ``warm_start`` (0 to 1) times what its previous version
    learned (0: from the prior alone).
    """

    rewards: Stream
    reward_field: str = "reward"
    policy: str = "thompson"
    epsilon: float = 0.1
    reward: str = "binary"
    prior: tuple[float, float] | None = None
    warm_start: float = 0.0

    POLICIES = ("thompson", "epsilon")
    REWARDS = ("binary", "continuous")

    def __post_init__(self) -> None:
        if self.policy not in self.POLICIES:
            raise DefinitionError(
                f"Bandit policy {self.policy!r} is not one of {', '.join(self.POLICIES)}"
                + did_you_mean(self.policy, self.POLICIES)
            )
        if not 0 <= self.epsilon <= 1:
            raise DefinitionError(f"Bandit epsilon must be in [0, 1], not {self.epsilon!r}")
        if self.reward not in self.REWARDS:
            raise DefinitionError(
                f"Bandit reward {self.reward!r} is not one of {', '.join(self.REWARDS)}"
            )
        if not 0 <= self.warm_start <= 1:
            raise DefinitionError(f"Bandit warm_start must be in [0, 1], not {self.warm_start!r}")
        if self.prior is not None:
            a, b = self.prior
            if self.reward == "binary" and not (a > 0 and b > 0):
                raise DefinitionError("a binary Bandit's prior is (alpha, beta), both > 0")
            if self.reward == "continuous" and not b > 0:
                raise DefinitionError("a continuous Bandit's prior is (mean, weight), weight > 0")

    @property
    def prior_or_default(self) -> tuple[float, float]:
        if self.prior is not None:
            return (float(self.prior[0]), float(self.prior[1]))
        return (1.0, 1.0) if self.reward == "binary" else (0.0, 1.0)

    def spec(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}  # absent unless set, so existing services keep versions
        if self.reward != "binary":
            extra["reward"] = self.reward
        if self.prior is not None:
            extra["prior"] = list(self.prior)
        if self.warm_start:
            extra["warm_start"] = self.warm_start
        return {
            "rewards": self.rewards.name,
            "reward_field": self.reward_field,
            "policy": self.policy,
            "epsilon": self.epsilon,
            **extra,
        }


@dataclass(frozen=True)
class Feedback:
    """Ground truth by prediction id: events of ``stream`` carrying the ``prediction_id`` a
    service answered with and the outcome in ``field`` (0/1 for classifiers, a number for
    regressors). The monitor and experiment analysis use it instead of the model's label.

    Late feedback is joined whenever it arrives; a prediction with several feedback events
    takes the latest by event time (a correction replaces a label); events naming no logged
    prediction are ignored.
    """

    stream: Stream
    field: str = "label"
    prediction_id: str = "prediction_id"

    def spec(self) -> dict[str, Any]:
        return {
            "stream": self.stream.name,
            "field": self.field,
            "prediction_id": self.prediction_id,
        }


class Service(Definition):
    """A prediction service.

    ``routing``: "champion" (the first variant only), "ab" (weights, sticky per entity),
    "shadow" (the first variant answers; the others are scored and logged after the response),
    or "bandit" (see ``Bandit``). ``defaults`` are the feature values used for entities the
    online store has never seen (the response flags them). With ``trigger``, every new event
    of that stream is scored and published to ``output``.

    Ranking: with ``candidates`` (an entity, e.g. ``item``), the model predicts for pairs
    (its entity's keys are the request's keys plus the candidate's, e.g. user_id + item_id);
    a request names one request entity and a list of candidates, every candidate is scored
    and logged, and the ``k`` best (``k`` per request, at most ``max_candidates`` candidates)
    are returned in order.

    ``feedback``: where the ground truth of this service's predictions arrives by prediction
    id (see ``Feedback``); without it, the model's own label is evaluated at each prediction's
    time. ``higher_is_better``: for experiment verdicts, whether a higher outcome is better
    (False for, e.g., churn). ``batch_schedule``: a cron expression; ``headwater scheduler``
    then scores every entity of the service at each fire time (the batch path, every
    prediction logged) into ``batch_output`` under the project folder (``{service}`` and
    ``{date}`` are filled in).

    ``score_alternatives`` (A/B and bandit services): every variant a request's routing
    passed over is scored too, off the request's path, and logged as not chosen with its
    probability of being chosen and the id of the answer (``alternative_to``).

    ``explore`` (ranking services): with this probability a request's first place goes to a
    candidate drawn uniformly from those scored instead of the best-scored one (epsilon-greedy
    on the first place); each candidate's record holds the probability that it was placed
    first (``action_propensity``) and its rank by score (``score_rank``), so that other
    policies can be evaluated off-policy on the logged traffic.

    ``segments``: context fields or features of its models (or ``Segment``s) whose groups
    the monitor reports one by one, besides the models' own segments.

    ``required``: the server is ready (``/readyz`` 200) only when this service's model
    versions are loaded; a server loads a required service's versions at start-up. Other
    services report their own readiness and never make the server unready.
    """

    kind = "service"

    def __init__(
        self,
        name: str,
        *,
        variants: Sequence[Variant] | None = None,
        model: Model | None = None,
        routing: str = "champion",
        context: Sequence[str] = (),
        defaults: Mapping[str, Any] | None = None,
        bandit: Bandit | None = None,
        trigger: Stream | None = None,
        output: str | None = None,
        candidates: Entity | None = None,
        k: int = 10,
        max_candidates: int = 1000,
        feedback: Feedback | None = None,
        segments: Sequence[str | Segment] = (),
        score_alternatives: bool = False,
        explore: float = 0.0,
        higher_is_better: bool = True,
        batch_schedule: str | None = None,
        batch_output: str = "scores/{service}/{date}.parquet",
        required: bool = False,
        owner: str | None = None,
        description: str | None = None,
        deprecated: bool = False,
        tags: Sequence[str] = (),
    ) -> None:
        self._init_common(name, owner, description, deprecated, tuple(tags))
        if model is not None:
            variants = [Variant("champion", model), *(variants or [])]
        if not variants:
            raise DefinitionError(f"service {name!r} needs a model or variants")
        if routing not in ROUTINGS:
            raise DefinitionError(f"service {name!r}: routing must be one of {ROUTINGS}")
        names = [check_name("variant", v.name) for v in variants]
        if len(set(names)) != len(names):
            raise DefinitionError(f"service {name!r} has two variants with the same name")
        entities = {v.model.entity.name for v in variants}
        if len(entities) > 1:
            raise DefinitionError(f"service {name!r}: all variants must predict for one entity")
        if routing in ("ab", "shadow", "bandit") and len(variants) < 2:
            raise DefinitionError(f"service {name!r}: {routing} routing needs two variants")
        if routing == "ab" and any(v.weight <= 0 for v in variants):
            raise DefinitionError(f"service {name!r}: A/B weights must be positive")
        if routing == "bandit":
            if bandit is None:
                raise DefinitionError(f"service {name!r}: bandit routing needs bandit=Bandit(...)")
            for f in ("prediction_id", bandit.reward_field):
                bandit.rewards.field(f)
        if trigger is not None:
            missing = [k for k in variants[0].model.entity.keys if k not in trigger.fields]
            if missing:
                raise DefinitionError(
                    f"service {name!r}: trigger stream {trigger.name!r} lacks key {missing[0]!r}"
                )
            output = output or f"{name}_scores"
            check_name("stream", output)
            if output in RESERVED_STREAMS:
                raise DefinitionError(f"service {name!r}: {output!r} is a reserved stream name")
        self.candidates, self.k, self.max_candidates = candidates, k, max_candidates
        if feedback is not None:
            for f in (feedback.prediction_id, feedback.field):
                feedback.stream.field(f)  # a clear error, with a suggestion, if it is missing
        self.feedback, self.higher_is_better = feedback, higher_is_better
        if batch_schedule is not None and candidates is not None:
            raise DefinitionError(f"service {name!r}: a ranking service has no batch schedule")
        if not batch_output.endswith((".parquet", ".csv")):
            raise DefinitionError(
                f"service {name!r}: batch_output must end in .parquet or .csv, not {batch_output!r}"
            )
        self.batch_schedule, self.batch_output = batch_schedule, batch_output
        self.required = required
        model_keys = variants[0].model.entity.keys
        if candidates is not None:
            missing = [c for c in candidates.keys if c not in model_keys]
            if missing:
                raise DefinitionError(
                    f"service {name!r} ranks {candidates.name!r} candidates, but its model "
                    f"{variants[0].model.name!r} predicts for {variants[0].model.entity.name!r}"
                    f" (keys {list(model_keys)}), which lacks {missing[0]!r}; rank with a model "
                    "over pairs, e.g. an entity with keys ['user_id', 'item_id']"
                )
            if len(candidates.keys) == len(model_keys):
                raise DefinitionError(
                    f"service {name!r}: its model's entity must have keys besides the "
                    f"candidate's ({list(candidates.keys)}), e.g. the user's"
                )
            if not 1 <= k <= max_candidates:
                raise DefinitionError(f"service {name!r}: k must be between 1 and max_candidates")
            if trigger is not None:
                raise DefinitionError(f"service {name!r}: a ranking service has no trigger")
        self.variants = tuple(variants)
        self.routing, self.bandit, self.trigger, self.output = routing, bandit, trigger, output
        self.context = tuple(check_name("context field", c) for c in context)
        self.defaults = dict(defaults or {})
        self.segments = segments_of(f"service {name!r}", segments)
        if score_alternatives and routing not in ("ab", "bandit"):
            raise DefinitionError(
                f"service {name!r}: score_alternatives logs the variants an A/B test or a "
                f"bandit passed over; routing {routing!r} passes over none"
            )
        self.score_alternatives = score_alternatives
        if explore and candidates is None:
            raise DefinitionError(
                f"service {name!r}: explore places a random candidate first; only a ranking "
                "service (candidates=...) has candidates"
            )
        if not 0 <= explore < 1:
            raise DefinitionError(f"service {name!r}: explore must be in [0, 1), not {explore!r}")
        self.explore = float(explore)
        for seg in self.segments:
            features = {f for v in self.variants for f in v.model.features}
            if seg.name not in self.context and seg.name not in features:
                raise DefinitionError(
                    f"service {name!r}: segment {seg.name!r} is neither a context field nor a "
                    "feature of its models; monitoring groups its predictions by what they log"
                )

    @property
    def entity(self) -> Any:
        return self.variants[0].model.entity

    @property
    def request_keys(self) -> tuple[str, ...]:
        """The keys a request names: the model's entity keys, less the candidate's when
        ranking. Routing is sticky on these (all candidates of a request share a variant)."""
        if self.candidates is None:
            return tuple(self.entity.keys)
        return tuple(k for k in self.entity.keys if k not in self.candidates.keys)

    def spec(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}  # absent unless used, so existing services keep versions
        if self.candidates is not None:
            extra.update(
                candidates=self.candidates.name, k=self.k, max_candidates=self.max_candidates
            )
        if self.feedback is not None:
            extra["feedback"] = self.feedback.spec()
        if not self.higher_is_better:
            extra["higher_is_better"] = False
        if self.required:
            extra["required"] = True
        if self.segments:
            extra["segments"] = [s.spec() for s in self.segments]
        if self.score_alternatives:
            extra["score_alternatives"] = True
        if self.explore:
            extra["explore"] = self.explore
        if self.batch_schedule is not None:
            extra.update(batch_schedule=self.batch_schedule, batch_output=self.batch_output)
        return {
            "kind": self.kind,
            "name": self.name,
            "variants": [v.spec() for v in self.variants],
            "routing": self.routing,
            "context": list(self.context),
            "defaults": self.defaults,
            "bandit": None if self.bandit is None else self.bandit.spec(),
            "trigger": None if self.trigger is None else self.trigger.name,
            "output": self.output,
            **extra,
        }
