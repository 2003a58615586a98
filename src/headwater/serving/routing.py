"""Routing policies: which variant answers for an entity (champion, A/B, shadow, bandit)."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from headwater.definitions import Service, Variant
from headwater.log.base import Log, partition_name

PREDICTIONS_STREAM = "predictions"


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
        self._bandit = BanditState()
        self._lock = threading.Lock()

    def choose(self, key: str) -> Variant:
        s = self.service
        if s.routing == "ab":
            return weighted_choice(s.variants, bucket(s.name, key))
        if s.routing == "bandit":
            return self._bandit_choice()
        return s.variants[0]

    def shadows(self) -> tuple[Variant, ...]:
        return self.service.variants[1:] if self.service.routing == "shadow" else ()

    # -- bandit ----------------------------------------------------------------------------

    def _bandit_choice(self) -> Variant:
        assert self.service.bandit is not None
        variants, b = self.service.variants, self._bandit
        with self._lock:
            if self.service.bandit.policy == "epsilon":
                if self._rng.random() < self.service.bandit.epsilon:
                    return self._rng.choice(variants)
                rates = {
                    v.name: (b.successes.get(v.name, 0) + 1)
                    / (b.successes.get(v.name, 0) + b.failures.get(v.name, 0) + 2)
                    for v in variants
                }
                return max(variants, key=lambda v: rates[v.name])
            draws = {
                v.name: self._rng.betavariate(
                    b.successes.get(v.name, 0) + 1, b.failures.get(v.name, 0) + 1
                )
                for v in variants
            }
        return max(variants, key=lambda v: draws[v.name])

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
