"""Routing policies: which variant answers for an entity (champion, A/B, shadow, bandit)."""

from __future__ import annotations

import hashlib
import math
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from headwater.definitions import Service, Variant
from headwater.log.base import Log, partition_name

PREDICTIONS_STREAM = "predictions"
# Thompson sampling's probability of choosing each variant is estimated from this many joint
# draws of the posteriors (recomputed only when they change), and recorded with it.
THOMPSON_DRAWS = 4000


@dataclass(frozen=True)
class Routed:
    """The variant that answers, and the probability with which the routing policy chose it
    (None when a request pinned it); ``draws``: the Monte Carlo draws behind that probability
    (Thompson sampling)."""

    variant: Variant
    propensity: float | None
    draws: int | None = None


def bucket(service: str, key: str) -> float:
    """A stable number in [0, 1) for an entity of a service: the same entity, the same arm."""
    digest = hashlib.blake2b(f"{service}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def weighted_choice(variants: Sequence[Variant], u: float) -> Variant:
    total = sum(v.weight for v in variants)
    acc = 0.0
    for v in variants:
        acc += v.weight / total
        if u < acc:
            return v
    return variants[-1]


@dataclass
class Arm:
    """What one variant's model version has earned: rewards seen, their sum and squares."""

    n: float = 0.0
    total: float = 0.0
    total_sq: float = 0.0

    def scaled(self, factor: float) -> Arm:
        return Arm(self.n * factor, self.total * factor, self.total_sq * factor)

    def plus(self, other: Arm) -> Arm:
        return Arm(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)


@dataclass
class BanditState:
    """Posteriors per (variant, model version), learned from the reward stream joined to
    the logged predictions."""

    arms: dict[tuple[str, int], Arm] = field(default_factory=dict)
    arm_of: dict[str, tuple[str, int]] = field(default_factory=dict)  # prediction id -> arm
    pending: dict[str, float] = field(default_factory=dict)  # rewards seen before predictions
    offsets: dict[str, int] = field(default_factory=dict)
    refused: int = 0  # rewards that were not a number (or not 0/1 for a binary bandit)


@dataclass(frozen=True)
class _Posteriors:
    key: tuple[int, tuple[tuple[str, int], ...]]  # (updates so far, each variant's arm)
    params: list[tuple[float, float]]
    means: list[float]
    probs: list[float]  # Thompson sampling's probability of choosing each variant


class Router:
    """Chooses the answering variant (and the shadows) for each entity key."""

    def __init__(
        self,
        service: Service,
        log: Log,
        seed: int | None = None,
        versions: Callable[[Variant], int | None] | None = None,
    ) -> None:
        """``versions``: the model version each variant serves now (a bandit learns per
        version: a promotion starts the variant's new version from its prior)."""
        self.service, self._log = service, log
        self._versions = versions or (lambda _: None)
        self._rng = random.Random(seed)
        self._np_rng = np.random.default_rng(seed)
        self._bandit = BanditState()
        self._lock = threading.Lock()
        self._changes = 0  # posterior updates so far: the posteriors are cached by it
        self._cached: _Posteriors | None = None
        total = sum(v.weight for v in service.variants)
        self._weights = {v.name: v.weight / total for v in service.variants}
        # made once: routing by weight or to the first variant creates nothing per request
        self._first = Routed(service.variants[0], 1.0)
        self._by_weight = {v.name: Routed(v, self._weights[v.name]) for v in service.variants}

    def choose(self, key: str) -> Variant:
        return self.route(key).variant

    def route(self, key: str) -> Routed:
        """The variant for an entity key, with the probability of that choice."""
        s = self.service
        if s.routing == "ab":
            return self._by_weight[weighted_choice(s.variants, bucket(s.name, key)).name]
        if s.routing == "bandit":
            return self._bandit_route()
        return self._first

    def probabilities(self) -> dict[str, float]:
        """Each variant's probability of answering a request now (A/B: its weight share;
        bandits: under the current posteriors; otherwise the first variant always)."""
        s = self.service
        if s.routing == "ab":
            return dict(self._weights)
        if s.routing != "bandit":
            return {v.name: float(i == 0) for i, v in enumerate(s.variants)}
        assert s.bandit is not None
        state = self._state()
        if s.bandit.policy == "epsilon":
            eps, n = s.bandit.epsilon, len(s.variants)
            best = max(range(n), key=state.means.__getitem__)
            return {v.name: eps / n + (1 - eps) * (i == best) for i, v in enumerate(s.variants)}
        return {v.name: p for v, p in zip(s.variants, state.probs, strict=True)}

    def explore(self, candidates: int) -> int | None:
        """For a ranking service with ``explore``: the candidate drawn to be placed first
        instead of the best-scored one, or None (probability 1 - explore)."""
        with self._lock:
            if self._rng.random() < self.service.explore:
                return self._rng.randrange(candidates)
        return None

    def shadows(self) -> tuple[Variant, ...]:
        return self.service.variants[1:] if self.service.routing == "shadow" else ()

    # -- bandit ----------------------------------------------------------------------------

    def _arm(self, v: Variant) -> tuple[str, int]:
        return (v.name, self._versions(v) or 0)

    def _evidence(self, v: Variant) -> Arm:
        """The current version's rewards, plus ``warm_start`` times its previous version's."""
        assert self.service.bandit is not None
        name, version = self._arm(v)
        arms = self._bandit.arms
        own = arms.get((name, version), Arm())
        warm = self.service.bandit.warm_start
        if warm:
            earlier = [ver for (n, ver) in arms if n == name and ver < version]
            if earlier:
                own = own.plus(arms[(name, max(earlier))].scaled(warm))
        return own

    def _posterior(self, v: Variant) -> tuple[float, float]:
        """Binary: Beta (alpha, beta). Continuous: normal (mean, standard deviation) of the
        mean reward, the prior counting as ``weight`` rewards of its mean."""
        assert self.service.bandit is not None
        bandit, arm = self.service.bandit, self._evidence(v)
        p0, p1 = bandit.prior_or_default
        if bandit.reward == "binary":
            return (p0 + arm.total, p1 + arm.n - arm.total)
        weight = p1 + arm.n
        mean = (p0 * p1 + arm.total) / weight
        if arm.n >= 2:
            variance = max((arm.total_sq - arm.total**2 / arm.n) / (arm.n - 1), 1e-12)
        else:
            variance = max(abs(p0), 1.0) ** 2  # before any spread is seen: wide
        return (mean, math.sqrt(variance / weight))

    def _mean(self, params: tuple[float, float]) -> float:
        assert self.service.bandit is not None
        a, b = params
        return a / (a + b) if self.service.bandit.reward == "binary" else a

    def _state(self) -> _Posteriors:
        """Each variant's posterior, mean and (Thompson sampling) probability of being
        chosen: computed when the posteriors or the versions served change, else reused."""
        assert self.service.bandit is not None
        variants = self.service.variants
        key = (self._changes, tuple(self._arm(v) for v in variants))
        cached = self._cached
        if cached is not None and cached.key == key:
            return cached
        with self._lock:
            params = [self._posterior(v) for v in variants]
        means = [self._mean(p) for p in params]
        probs: list[float] = []
        if self.service.bandit.policy == "thompson":
            probs = self._thompson_probabilities(params)
        state = _Posteriors(key, params, means, probs)
        self._cached = state
        return state

    def _bandit_route(self) -> Routed:
        assert self.service.bandit is not None
        bandit, variants = self.service.bandit, self.service.variants
        state = self._state()
        if bandit.policy == "epsilon":
            eps, n = bandit.epsilon, len(variants)
            best = variants[max(range(n), key=state.means.__getitem__)]
            with self._lock:
                chosen = self._rng.choice(variants) if self._rng.random() < eps else best
            return Routed(chosen, eps / n + (1 - eps) * (chosen is best))
        with self._lock:
            if bandit.reward == "binary":
                draws = [self._rng.betavariate(a, b) for a, b in state.params]
            else:
                draws = [self._rng.gauss(m, sd) for m, sd in state.params]
        i = max(range(len(variants)), key=draws.__getitem__)
        return Routed(variants[i], state.probs[i], THOMPSON_DRAWS)

    def _thompson_probabilities(self, params: list[tuple[float, float]]) -> list[float]:
        """P(each variant's posterior draw is the largest), from THOMPSON_DRAWS joint draws,
        smoothed by half a draw so that no variant that can be chosen gets 0."""
        assert self.service.bandit is not None
        table = np.array(params)
        size = (THOMPSON_DRAWS, len(params))
        with self._lock:
            if self.service.bandit.reward == "binary":
                samples = self._np_rng.beta(table[:, 0], table[:, 1], size=size)
            else:
                samples = self._np_rng.normal(table[:, 0], table[:, 1], size=size)
        wins = np.bincount(samples.argmax(axis=1), minlength=len(params))
        return [float(p) for p in (wins + 0.5) / (THOMPSON_DRAWS + 0.5 * len(params))]

    def posteriors(self) -> dict[str, dict[str, Any]]:
        """Each variant's current arm: the version it serves, rewards seen (with the warm
        start), the posterior mean and the probability of being chosen now."""
        probabilities = self.probabilities()
        state = self._state()
        out = {}
        for v, (_, version), mean in zip(self.service.variants, state.key[1], state.means,
                                         strict=True):  # fmt: skip
            out[v.name] = {
                "version": version or None,
                "rewards": self._evidence(v).n,
                "mean": mean,
                "probability": probabilities[v.name],
            }
        return out

    def learn(self) -> dict[str, tuple[float, float]]:
        """Read new predictions and rewards from the log and update the posteriors."""
        bandit = self.service.bandit
        if bandit is None:
            return {}
        b = self._bandit
        for stream in (PREDICTIONS_STREAM, bandit.rewards.name):
            for partition in range(self._log.partitions(stream)):
                position = partition_name(stream, partition)
                start = b.offsets.get(position, 0)
                while records := self._log.read(stream, start, 10_000, partition):
                    for r in records:
                        self._absorb(stream, orjson.loads(r.payload), bandit.reward_field)
                    start = records[-1].offset + 1
                b.offsets[position] = start
        with self._lock:
            out = {}
            for v in self.service.variants:
                arm = self._evidence(v)
                out[v.name] = (arm.total, arm.n - arm.total)
            return out

    def _absorb(self, stream: str, event: dict[str, Any], reward_field: str) -> None:
        b = self._bandit
        if stream == PREDICTIONS_STREAM:
            if event.get("service") != self.service.name or event.get("shadow"):
                return
            pid = event["prediction_id"]
            arm = (event["variant"], int(event.get("model_version") or 0))
            b.arm_of[pid] = arm
            if pid in b.pending:
                self._reward(arm, b.pending.pop(pid))
            return
        pid, value = event.get("prediction_id"), event.get(reward_field)
        if pid is None or value is None:
            return
        reward = self._valid(value)
        if reward is None:
            b.refused += 1
            return
        found = b.arm_of.get(pid)
        if found is None:
            b.pending[pid] = reward
        else:
            self._reward(found, reward)

    def _valid(self, value: Any) -> float | None:
        assert self.service.bandit is not None
        try:
            reward = float(value)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(reward):
            return None
        if self.service.bandit.reward == "binary" and reward not in (0.0, 1.0):
            return None
        return reward

    def _reward(self, arm: tuple[str, int], reward: float) -> None:
        with self._lock:
            found = self._bandit.arms.setdefault(arm, Arm())
            found.n += 1
            found.total += reward
            found.total_sq += reward * reward
            self._changes += 1
