"""Labels and models: what to predict, from which features, fitted how, promoted when."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from headwater.definitions.aggregation import Aggregation
from headwater.definitions.base import Definition, check_feature_name, content_hash
from headwater.definitions.entity import Entity
from headwater.definitions.expectations import Expectation
from headwater.definitions.expr import Expr
from headwater.definitions.feature import function_source
from headwater.definitions.stream import Stream
from headwater.definitions.training import (
    Search,
    Segment,
    Step,
    check_steps,
    plan,
    segments_of,
)
from headwater.definitions.windows import parse_duration
from headwater.errors import DefinitionError

CLASSIFIER_METRICS = ("auc", "log_loss", "precision_at_k", "recall_at_k", "brier")
REGRESSOR_METRICS = ("rmse", "mae")
BUILTIN_STEPS = (
    "training_set", "validate", "split", "train_rows", "test_rows", "search", "fit",
    "evaluate", "profile",
)  # fmt: skip


class Label(Definition):
    """The ground truth at time t: an aggregation of the entity's events in ``[t, t + horizon)``.

    ``transform`` (vectorized, on a pandas Series) turns the aggregate into the label, e.g.
    "no session in the 14 days after t":

    >>> user = Entity("user", keys="user_id", owner="growth", description="A shopper")
    >>> sessions = Stream("sessions", fields={"user_id": "string"}, key="user_id", time="ts",
    ...                   owner="web", description="Visits")
    >>> from headwater.definitions import aggregation as agg
    >>> churned = Label("churned_14d", entity=user, stream=sessions, aggregation=agg.count(),
    ...                 horizon="14d", transform=lambda n: n == 0, owner="growth",
    ...                 description="No visit in the next 14 days")
    >>> churned.horizon_us // 86_400_000_000
    14
    """

    kind = "label"

    def __init__(
        self,
        name: str,
        *,
        entity: Entity,
        stream: Stream,
        aggregation: Aggregation,
        horizon: str | timedelta,
        where: Expr | None = None,
        transform: Callable[[Any], Any] | None = None,
        owner: str | None = None,
        description: str | None = None,
        deprecated: bool = False,
        tags: Sequence[str] = (),
    ) -> None:
        self._init_common(name, owner, description, deprecated, tuple(tags))
        for key in entity.keys:
            if key not in stream.fields:
                raise DefinitionError(
                    f"label {name!r}: stream {stream.name!r} has no key field {key!r} of "
                    f"entity {entity.name!r}"
                )
        if aggregation.field is not None:
            stream.field(aggregation.field)
        for f in where.fields() if where is not None else ():
            stream.field(f)
        self.entity, self.stream, self.aggregation = entity, stream, aggregation
        self.where, self.transform = where, transform
        self.horizon_us = parse_duration(horizon)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "entity": self.entity.spec(),
            "stream": self.stream.name,
            "aggregation": self.aggregation.spec(),
            "horizon_us": self.horizon_us,
            "where": None if self.where is None else self.where.spec(),
            "transform": None if self.transform is None else function_source(self.transform),
        }


@dataclass(frozen=True)
class PromotionPolicy:
    """When a version may become champion: ``metric`` no worse than the champion's on the same
    held-out data by more than ``max_regression`` (and at least ``minimum``, if set); with
    ``max_segment_gap``, the metric of no two groups of any of the model's segments may
    differ by more than that on the held-out rows."""

    metric: str = "auc"
    max_regression: float = 0.005
    minimum: float | None = None
    higher_is_better: bool = True
    max_segment_gap: float | None = None


@dataclass(frozen=True)
class RetrainPolicy:
    """When the monitor retrains a model: on a drift alert of its champion, and/or when a live
    metric falls below a floor (e.g. ``below={"auc": 0.7}``). The new version becomes the
    "challenger"; a shadow service scores it, and the monitor promotes it only if it beats
    the champion on the same live, labelled requests by the model's promotion policy."""

    on_drift: bool = True
    below: tuple[tuple[str, float], ...] = ()
    min_labelled: int = 100


_FIRST_KINDS = ("column", "min_value", "max_value", "max_null_rate")


class Model(Definition):
    """A training spec: label, features, the fit, the split, metrics and promotion policy.

    ``estimator`` is a function returning a fresh scikit-learn-compatible estimator.
    Examples are the entity's rows at every ``sample_every`` over the ``lookback`` before the
    latest time whose label is known; the last ``test_fraction`` of that time range is held out.
    ``baseline`` is an optional heuristic: a vectorized function of the features (a pandas
    DataFrame) returning scores, evaluated on the same held-out rows (scores outside [0, 1]
    are a ranking, not a probability: they get AUC and precision/recall at k, no log loss,
    Brier score or ECE).

    ``steps`` are training steps of your own (``@step``) composed with the built-in ones;
    ``search`` a hyperparameter ``Search``; ``segments`` the features (or ``Segment``s)
    whose groups the evaluation and the monitor report one by one; ``parallel``: how many
    independent steps run at once.
    """

    kind = "model"

    def __init__(
        self,
        name: str,
        *,
        label: Label,
        features: Sequence[str],
        estimator: Callable[[], Any],
        task: str = "classification",
        sample_every: str | timedelta = "1d",
        lookback: str | timedelta = "28d",
        test_fraction: float = 0.25,
        metrics: Sequence[str] | None = None,
        k: int = 100,
        baseline: Callable[[Any], Any] | None = None,
        promotion: PromotionPolicy | None = None,
        expectations: Sequence[Expectation] = (),
        min_rows: int = 100,
        retries: int = 0,
        schedule: str | None = None,
        retrain: RetrainPolicy | None = None,
        steps: Sequence[Step] = (),
        search: Search | None = None,
        segments: Sequence[str | Segment] = (),
        parallel: int = 4,
        owner: str | None = None,
        description: str | None = None,
        deprecated: bool = False,
        tags: Sequence[str] = (),
    ) -> None:
        self._init_common(name, owner, description, deprecated, tuple(tags))
        if task not in ("classification", "regression"):
            raise DefinitionError(f"model {name!r}: task must be 'classification' or 'regression'")
        if not features:
            raise DefinitionError(f"model {name!r} needs at least one feature")
        if not callable(estimator):
            raise DefinitionError(
                f"model {name!r}: estimator must be a function returning a fresh estimator, "
                "e.g. estimator=lambda: LGBMClassifier(n_estimators=200)"
            )
        if not 0 < test_fraction < 1:
            raise DefinitionError(f"model {name!r}: test_fraction must be between 0 and 1")
        allowed = CLASSIFIER_METRICS if task == "classification" else REGRESSOR_METRICS
        chosen = tuple(metrics or allowed)
        for m in chosen:
            if m not in allowed:
                raise DefinitionError(f"model {name!r}: unknown {task} metric {m!r}; use {allowed}")
        self.label, self.entity = label, label.entity
        self.features = tuple(check_feature_name(f) for f in features)
        self.estimator, self.task, self.metrics, self.k = estimator, task, chosen, k
        self.sample_every_us = parse_duration(sample_every)
        self.lookback_us = parse_duration(lookback)
        self.test_fraction, self.baseline = test_fraction, baseline
        default_metric = "auc" if task == "classification" else "rmse"
        self.promotion = promotion or PromotionPolicy(
            metric=default_metric, higher_is_better=task == "classification"
        )
        self.expectations, self.min_rows = tuple(expectations), min_rows
        self.retries, self.schedule, self.retrain = retries, schedule, retrain
        self.steps = check_steps(name, steps, BUILTIN_STEPS)
        plan(name, self.steps, search is not None)  # a step that waits for itself: refused
        if search is not None and not isinstance(search, Search):
            raise DefinitionError(f"model {name!r}: search must be a Search(space=...)")
        if search is not None and search.metric is not None and search.metric not in allowed:
            raise DefinitionError(
                f"model {name!r}: search metric {search.metric!r} is not a {task} metric"
            )
        self.search = search
        self.segments = segments_of(f"model {name!r}", segments)
        if parallel < 1:
            raise DefinitionError(f"model {name!r}: parallel must be at least 1")
        self.parallel = parallel

    @property
    def examples_version(self) -> str:
        """What decides the training examples (not the fit): their features, label and
        sampling. Models sharing it share a cached training set."""
        return content_hash(
            [
                list(self.features),
                [s.name for s in self.segments],
                self.label.spec(),
                self.sample_every_us,
                self.lookback_us,
            ]
        )

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "label": self.label.spec(),
            "features": list(self.features),
            "estimator": function_source(self.estimator),
            "task": self.task,
            "sample_every_us": self.sample_every_us,
            "lookback_us": self.lookback_us,
            "test_fraction": self.test_fraction,
            "metrics": list(self.metrics),
            "k": self.k,
            "baseline": None if self.baseline is None else function_source(self.baseline),
            "promotion": {  # a new field enters the spec only when set: versions stay comparable
                k: v
                for k, v in vars(self.promotion).items()
                if k != "max_segment_gap" or v is not None
            },
            "expectations": [  # new kinds enter only when set: versions stay comparable
                {k: v for k, v in vars(e).items() if k in _FIRST_KINDS or v is not None}
                for e in self.expectations
            ],
            "min_rows": self.min_rows,
            **(
                {"steps": [[s.name, list(s.outputs), function_source(s.fn)] for s in self.steps]}
                if self.steps
                else {}
            ),
            **({"search": self.search.spec()} if self.search else {}),
            **({"segments": [s.spec() for s in self.segments]} if self.segments else {}),
        }
