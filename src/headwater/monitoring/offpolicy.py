"""Off-policy evaluation: the reward a candidate routing policy would have earned on the logged
traffic of a service, from the logged choices and their propensities.

Two estimators of the candidate's mean reward, for a candidate that chooses among the logged
actions (a service's variants) with context-free probabilities:

- inverse propensity scoring (IPS): mean of ``w * reward`` with ``w = pi(a) / mu(a)``,
  ``mu`` the logged propensity of the logged action, ``pi`` the candidate's probability of it;
- self-normalized IPS (SNIPS): ``sum(w * reward) / sum(w)``, biased by O(1/n) but with a far
  smaller variance when the weights are uneven.

Intervals are normal, with standard errors clustered by entity: sticky A/B routing sends every
request of an entity to one variant, so an entity's rewards are not independent draws. A
candidate that would choose an action the logging policy never chose (no logged decision
with a positive propensity) cannot be evaluated from this traffic: it is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from headwater.errors import HeadwaterError


class OffPolicyError(HeadwaterError, ValueError):
    """The candidate policy cannot be evaluated on this traffic; the message says why."""


@dataclass(frozen=True)
class Estimate:
    estimator: str  # "ips" or "snips"
    value: float
    ci_low: float
    ci_high: float
    n: int  # logged decisions used
    clusters: int  # entities
    effective_n: float  # (sum w)^2 / sum w^2: how many decisions the estimate is worth


def ranking_policy(text: str) -> float:
    """A candidate policy for a ranking service's first place, as its exploration rate:
    ``greedy`` (always the best-scored candidate: 0), ``uniform`` (any candidate: 1), or
    ``explore=0.2``.

    >>> ranking_policy("greedy"), ranking_policy("uniform"), ranking_policy("explore=0.2")
    (0.0, 1.0, 0.2)
    """
    text = text.strip()
    if text in ("greedy", "uniform"):
        return 0.0 if text == "greedy" else 1.0
    name, _, value = text.partition("=")
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if name.strip() != "explore" or not 0 <= rate <= 1:
        raise OffPolicyError(
            f"{text!r}: a ranking's candidate policy is greedy, uniform or explore=RATE "
            "(RATE between 0 and 1)"
        )
    return rate


def parse_policy(text: str, actions: list[str]) -> dict[str, float]:
    """A candidate policy from the command line: an action's name (always it), or
    ``a=0.2,b=0.8`` (probabilities, normalized to sum to 1).

    >>> parse_policy("b", ["a", "b"]), parse_policy("a=1,b=3", ["a", "b"])
    ({'b': 1.0}, {'a': 0.25, 'b': 0.75})
    """
    text = text.strip()
    if "=" not in text:
        if text not in actions:
            raise OffPolicyError(f"unknown variant {text!r}; the service's are {actions}")
        return {text: 1.0}
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in actions:
            raise OffPolicyError(f"unknown variant {name!r}; the service's are {actions}")
        try:
            out[name] = float(weight)
        except ValueError:
            raise OffPolicyError(f"{part!r}: give a probability, e.g. {name}=0.5") from None
        if not out[name] >= 0 or math.isinf(out[name]):
            raise OffPolicyError(f"{part!r}: a probability is a non-negative number")
    total = sum(out.values())
    if total <= 0:
        raise OffPolicyError("the candidate policy gives every variant probability 0")
    return {k: v / total for k, v in out.items() if v > 0}


def evaluate(
    logged: pd.DataFrame,
    policy: Mapping[str, float] | None,
    *,
    target: str | None = None,
    action: str = "variant",
    propensity: str = "propensity",
    reward: str = "outcome",
    cluster: str = "entity",
    alpha: float = 0.05,
) -> list[Estimate]:
    """IPS and SNIPS estimates of ``policy``'s mean reward on the ``logged`` decisions;
    ``target`` instead names a column holding, per decision, the candidate policy's
    probability of the logged action (a policy that depends on the decision: a ranking's
    best-scored candidate).

    >>> rng = np.random.default_rng(0)
    >>> n = 20_000
    >>> chosen = np.where(rng.random(n) < 0.7, "a", "b")  # logged: a 70%, b 30%
    >>> rewards = (rng.random(n) < np.where(chosen == "a", 0.3, 0.5)).astype(float)
    >>> frame = pd.DataFrame({"variant": chosen, "outcome": rewards, "entity": range(n),
    ...                       "propensity": np.where(chosen == "a", 0.7, 0.3)})
    >>> ips, snips = evaluate(frame, {"b": 1.0})
    >>> ips.ci_low < 0.5 < ips.ci_high and snips.ci_low < 0.5 < snips.ci_high
    True
    """
    columns = [action, propensity, reward, cluster, *([target] if target else [])]
    frame = logged[columns].dropna()
    if frame.empty:
        raise OffPolicyError(
            "no logged decision has both a propensity and a matured reward in the window "
            "(propensities are logged since this release; wait for rewards or widen --days)"
        )
    mu = frame[propensity].to_numpy(dtype=float)
    if (mu <= 0).any() or (mu > 1).any():
        raise OffPolicyError("logged propensities must be in (0, 1]")
    acts = frame[action].astype(str).to_numpy()
    if target is not None:
        pi = frame[target].to_numpy(dtype=float)
    else:
        assert policy is not None
        seen = set(acts.tolist())
        never = sorted(a for a, p in policy.items() if p > 0 and a not in seen)
        if never:
            raise OffPolicyError(
                f"the candidate chooses {', '.join(map(repr, never))}, which the logging "
                "policy never chose in the window: no logged reward says what it would have "
                "earned (log traffic with some probability on it first)"
            )
        pi = np.array([policy.get(a, 0.0) for a in acts])
    w = pi / mu
    r = frame[reward].to_numpy(dtype=float)
    groups = pd.factorize(frame[cluster].astype(str))[0]
    n, clusters = len(frame), int(groups.max()) + 1
    z = float(stats.norm.ppf(1 - alpha / 2))
    effective = float(w.sum() ** 2 / (w**2).sum()) if (w > 0).any() else 0.0

    def clustered(values: np.ndarray) -> float:
        """The standard error of a mean of per-decision terms with mean zero by
        construction, summed by cluster (CR1)."""
        sums = np.bincount(groups, weights=values, minlength=clusters)
        scale = clusters / (clusters - 1) if clusters > 1 else 1.0
        return float(math.sqrt(scale * (sums**2).sum()) / n)

    ips = float((w * r).mean())
    se_ips = clustered(w * r - ips)
    out = [Estimate("ips", ips, ips - z * se_ips, ips + z * se_ips, n, clusters, effective)]
    if w.sum() > 0:
        snips = float((w * r).sum() / w.sum())
        se_snips = clustered(w * (r - snips) / w.mean())
        out.append(
            Estimate(
                "snips", snips, snips - z * se_snips, snips + z * se_snips, n, clusters, effective
            )  # fmt: skip
        )
    return out
