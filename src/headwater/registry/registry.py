"""The model registry: versions with lineage, aliases with history, gated promotion, rollback."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headwater.definitions import HeadwaterError, Model
from headwater.stores.metadata.base import MetadataStore

if TYPE_CHECKING:
    from headwater.registry.artifacts import Signature
    from headwater.stores.artifacts.base import ArtifactStore

VERSIONS = "model_versions"
ALIASES = "model_aliases"
RUNS = "runs"


class RegistryError(HeadwaterError):
    """A registry operation is not possible; the message says why and what to do."""


class PromotionRefused(RegistryError):
    """The model's promotion policy does not allow this version to become champion."""


class Registry:
    """Model versions and aliases, kept in the metadata store."""

    def __init__(
        self,
        metadata: MetadataStore,
        artifacts: ArtifactStore | None = None,
        legacy: Path | None = None,
    ) -> None:
        """``artifacts`` holds the model files; ``legacy`` is the project's
        ``.headwater/artifacts`` folder, where versions of 0.1.0 recorded theirs."""
        self._metadata = metadata
        self.artifacts, self._legacy = artifacts, legacy

    def load_model(self, doc: dict[str, Any]) -> tuple[Any, Signature]:
        """A version's fitted estimator and input signature, from its artifacts."""
        from headwater.registry import artifacts  # joblib loads only with a model

        return artifacts.load(doc["artifacts"], self.artifacts, self._legacy)

    def read_artifact(self, doc: dict[str, Any], kind: str) -> bytes:
        """One file of a version's artifacts: "estimator", "signature" or "lightgbm"."""
        from headwater.registry import artifacts

        return artifacts.read(doc["artifacts"], kind, self.artifacts, self._legacy)

    # -- versions ------------------------------------------------------------------------

    def versions(self, model: str) -> list[dict[str, Any]]:
        """Every version of ``model``, oldest first: one read of its ids' range."""
        docs = self._metadata.get_records(VERSIONS, prefix=f"{model}:").values()
        return sorted((d for d in docs if d["model"] == model), key=lambda d: d["version"])

    def version(self, model: str, version: int | str) -> dict[str, Any]:
        if isinstance(version, str) and not version.isdigit():
            resolved = self.alias(model, version)
            if resolved is None:
                raise RegistryError(f"model {model!r} has no alias {version!r}")
            version = resolved
        key = f"{model}:{int(version)}"
        doc = self._metadata.get_records(VERSIONS, [key]).get(key)  # one keyed read
        if doc is None:
            known = ", ".join(str(d["version"]) for d in self.versions(model)) or "none yet"
            raise RegistryError(f"model {model!r} has no version {version}; versions: {known}")
        return doc

    def register(self, model: str, doc: dict[str, Any], run: dict[str, Any]) -> int:
        """Add a version (its number is the next one) together with its run, atomically."""
        number = max([d["version"] for d in self.versions(model)], default=0) + 1
        doc = {**doc, "model": model, "version": number}
        run = {**run, "version": number}
        self._metadata.put_records([(VERSIONS, f"{model}:{number}", doc), (RUNS, run["id"], run)])
        return number

    # -- aliases -------------------------------------------------------------------------

    def aliases(self, model: str) -> dict[str, dict[str, Any]]:
        prefix = f"{model}:"
        return {
            k[len(prefix) :]: v
            for k, v in self._metadata.get_records(ALIASES, prefix=prefix).items()
            if k.startswith(prefix)
        }

    def alias(self, model: str, alias: str) -> int | None:
        return self.alias_versions([(model, alias)]).get((model, alias))

    def alias_versions(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """The version each (model, alias) points at, in one keyed read (the serving
        processes' refresh of every alias they serve); pairs pointing nowhere are left out."""
        keys = {f"{model}:{alias}": (model, alias) for model, alias in pairs}
        found = self._metadata.get_records(ALIASES, list(keys))
        return {keys[k]: doc["version"] for k, doc in found.items() if k in keys}

    def _set_alias(
        self, model: str, alias: str, version: int, by: str, reason: str, action: str, now_us: int
    ) -> None:
        key = f"{model}:{alias}"
        doc = self._metadata.get_records(ALIASES, [key]).get(key, {"history": []})
        entry = {
            "version": version,
            "previous": doc.get("version"),
            "by": by,
            "reason": reason,
            "action": action,
            "at_us": now_us,
        }
        self._metadata.put_records(
            [
                (
                    ALIASES,
                    f"{model}:{alias}",
                    {"version": version, "history": [*doc["history"], entry]},
                )
            ]
        )

    def promote(
        self,
        model: Model,
        version: int,
        alias: str,
        by: str,
        reason: str,
        now_us: int,
        force: bool = False,
    ) -> dict[str, Any]:
        """Point ``alias`` at ``version``; for "champion", the model's policy must allow it."""
        doc = self.version(model.name, version)
        if alias == "champion" and not force:
            self.check_policy(model, doc)
        self._set_alias(model.name, alias, version, by, reason, "promote", now_us)
        return doc

    def check_policy(self, model: Model, doc: dict[str, Any]) -> None:
        policy = model.promotion
        metric = policy.metric
        value = doc["metrics"].get(metric)
        if value is None or math.isnan(value):
            raise PromotionRefused(f"version {doc['version']} has no {metric!r} metric")
        sign = 1 if policy.higher_is_better else -1
        if policy.minimum is not None and sign * (value - policy.minimum) < 0:
            raise PromotionRefused(
                f"{metric} {value:.4f} of version {doc['version']} is below the policy's "
                f"minimum {policy.minimum}"
            )
        if policy.max_segment_gap is not None:
            self._check_segments(model, doc, policy.max_segment_gap)
        champion = self.alias(model.name, "champion")
        if champion is None or champion == doc["version"]:
            return
        compared = doc.get("comparison", {}).get("champion", {})
        if compared.get("version") != champion:
            raise PromotionRefused(
                f"version {doc['version']} was not evaluated against the current champion "
                f"(version {champion}); retrain it, or pass --force to promote anyway"
            )
        gap = sign * (value - compared["metrics"][metric])
        if gap < -policy.max_regression:
            raise PromotionRefused(
                f"{metric} {value:.4f} is worse than champion version {champion}'s "
                f"{compared['metrics'][metric]:.4f} on the same held-out rows by {-gap:.4f} "
                f"(the policy allows {policy.max_regression})"
            )

    @staticmethod
    def _check_segments(model: Model, doc: dict[str, Any], limit: float) -> None:
        found = doc.get("segments") or {}
        for seg in model.segments:
            report = found.get(seg.name)
            if report is None:
                raise PromotionRefused(
                    f"version {doc['version']} was not evaluated by segment {seg.name!r}; "
                    "retrain it to promote it under a policy that limits segment gaps"
                )
            gap = report["gap"]
            if gap is not None and gap["value"] > limit:
                low, high = gap["between"]
                raise PromotionRefused(
                    f"{gap['metric']} differs by {gap['value']:.4f} between groups {low!r} and "
                    f"{high!r} of segment {seg.name!r} (the policy allows {limit})"
                )

    def rollback(self, model: str, alias: str, by: str, reason: str, now_us: int) -> int:
        """Point ``alias`` back at the version it pointed to before its latest change."""
        doc = self.aliases(model).get(alias)
        if doc is None or doc["history"][-1]["previous"] is None:
            raise RegistryError(f"model {model!r}: alias {alias!r} has no earlier version")
        previous = int(doc["history"][-1]["previous"])
        self._set_alias(model, alias, previous, by, reason, "rollback", now_us)
        return previous

    # -- runs ----------------------------------------------------------------------------

    def save_run(self, run: dict[str, Any]) -> None:
        self._metadata.put_records([(RUNS, run["id"], run)])

    def run(self, run_id: str) -> dict[str, Any]:
        """One run (a training run, or a search's trial) by its id."""
        found = self._metadata.get_records(RUNS, ids=[run_id])
        if run_id not in found:
            raise RegistryError(f"no run {run_id!r}; `headwater runs` lists them")
        return found[run_id]

    def runs(self, model: str | None = None) -> list[dict[str, Any]]:
        docs = self._metadata.get_records(RUNS).values()
        chosen = [d for d in docs if model is None or d["model"] == model]
        return sorted(chosen, key=lambda d: d["started_us"])
