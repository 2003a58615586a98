"""Routing policies: which variant answers for an entity (champion, A/B, shadow, bandit)."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Sequence
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
class BanditState:
    """Beta posteriors per variant, learned from the reward stream joined to predictions."""

    successes: dict[str, float] = field(default_factory=dict)
    failures: dict[str, float] = field(default_factory=dict)
    variant_of: dict[str, str] = field(default_factory=dict)  # prediction id -> variant
    pending: dict[str, float] = field(default_factory=dict)  # rewards seen before predictions
    offsets: dict[str, int] = field(default_factory=dict)


class Router:
    """Chooses the answering variant (and the shadows) for each entity key."""

    def __init__(self, service: Service, log: Log, seed: int | None = None) -> None:
        self.service, self._log = service, log
        self._rng = random.Random(seed)
        self._np_rng = np.random.default_rng(seed)
        self._bandit = BanditState()
        self._lock = threading.Lock()
        self._changes = 0  # posterior updates so far: Thompson probabilities are cached by it
        self._thompson: tuple[int, dict[str, float]] | None = None
        total = sum(v.weight for v in service.variants)
        self._weights = {v.name: v.weight / total for v in service.variants}

    def choose(self, key: str) -> Variant:
        return self.route(key).variant

    def route(self, key: str) -> Routed:
        """The variant for an entity key, with the probability of that choice."""
        s = self.service
        if s.routing == "ab":
            v = weighted_choice(s.variants, bucket(s.name, key))
            return Routed(v, self._weights[v.name])
        if s.routing == "bandit":
            return self._bandit_route()
        return Routed(s.variants[0], 1.0)

    def probabilities(self) -> dict[str, float]:
        """Each variant's probability of answering a request now (A/B: its weight share;
        bandits: under the current posteriors; otherwise the first variant always)."""
        s = self.service
        if s.routing == "ab":
            return dict(self._weights)
        if s.routing != "bandit":
            return {v.name: float(i == 0) for i, v in enumerate(s.variants)}
        assert s.bandit is not None
        if s.bandit.policy == "epsilon":
            best = self._greedy().name
            eps, n = s.bandit.epsilon, len(s.variants)
            return {v.name: eps / n + (1 - eps) * (v.name == best) for v in s.variants}
        return dict(self._thompson_probabilities())

    def shadows(self) -> tuple[Variant, ...]:
        return self.service.variants[1:] if self.service.routing == "shadow" else ()

    # -- bandit ----------------------------------------------------------------------------

    def _greedy(self) -> Variant:
        b = self._bandit
        rates = {
            v.name: (b.successes.get(v.name, 0) + 1)
            / (b.successes.get(v.name, 0) + b.failures.get(v.name, 0) + 2)
            for v in self.service.variants
        }
        return max(self.service.variants, key=lambda v: rates[v.name])

    def _bandit_route(self) -> Routed:
        assert self.service.bandit is not None
        variants, b = self.service.variants, self._bandit
        if self.service.bandit.policy == "epsilon":
            eps, n = self.service.bandit.epsilon, len(variants)
            with self._lock:
                explore = self._rng.random() < eps
                chosen = self._rng.choice(variants) if explore else self._greedy()
                best = chosen if not explore else self._greedy()
            return Routed(chosen, eps / n + (1 - eps) * (chosen is best))
        with self._lock:
            draws = {
                v.name: self._rng.betavariate(
                    b.successes.get(v.name, 0) + 1, b.failures.get(v.name, 0) + 1
                )
                for v in variants
            }
        chosen = max(variants, key=lambda v: draws[v.name])
        return Routed(chosen, self._thompson_probabilities()[chosen.name], THOMPSON_DRAWS)

    def _thompson_probabilities(self) -> dict[str, float]:
        """P(each variant's posterior draw is the largest), from THOMPSON_DRAWS joint draws,
        smoothed by half a draw so that no variant that can be chosen gets 0."""
        cached = self._thompson
        if cached is not None and cached[0] == self._changes:
            return cached[1]
        with self._lock:
            changes, b, variants = self._changes, self._bandit, self.service.variants
            alpha = [b.successes.get(v.name, 0) + 1 for v in variants]
            beta = [b.failures.get(v.name, 0) + 1 for v in variants]
            samples = self._np_rng.beta(alpha, beta, size=(THOMPSON_DRAWS, len(variants)))
        wins = np.bincount(samples.argmax(axis=1), minlength=len(variants))
        smoothed = (wins + 0.5) / (THOMPSON_DRAWS + 0.5 * len(variants))
        probs = {v.name: float(p) for v, p in zip(variants, smoothed, strict=True)}
        self._thompson = (changes, probs)
        return probs

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
            return {
                v.name: (b.successes.get(v.name, 0), b.failures.get(v.name, 0))
                for v in self.service.variants
            }

    def _absorb(self, stream: str, event: dict[str, Any], reward_field: str) -> None:
        b = self._bandit
        if stream == PREDICTIONS_STREAM:
            if event.get("service") != self.service.name or event.get("shadow"):
                return
            pid, variant = event["prediction_id"], event["variant"]
            b.variant_of[pid] = variant
            if pid in b.pending:
                self._reward(variant, b.pending.pop(pid))
            return
        pid, reward = event.get("prediction_id"), event.get(reward_field)
        if pid is None or reward is None:
            return
        variant = b.variant_of.get(pid)
        if variant is None:
            b.pending[pid] = float(reward)
        else:
            self._reward(variant, float(reward))

    def _reward(self, variant: str, reward: float) -> None:
        with self._lock:
            b = self._bandit
            b.successes[variant] = b.successes.get(variant, 0) + reward
            b.failures[variant] = b.failures.get(variant, 0) + (1 - reward)
            self._changes += 1
