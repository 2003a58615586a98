"""``plan`` and ``apply``: what would change in the metadata store, and doing it."""

from __future__ import annotations

from dataclasses import dataclass, field

from headwater.definitions import Definition, HeadwaterError
from headwater.stores.metadata.base import MetadataStore, RegisteredDefinition


class PlanRefused(HeadwaterError):
    """The plan contains a change that is not allowed (e.g. removing an active feature)."""


@dataclass(frozen=True)
class Change:
    action: str  # added | changed | updated | deprecated | removed | unchanged
    kind: str
    name: str
    old_version: str | None
    new_version: str | None
    detail: str = ""
    owner: str | None = None  # the team that owns the definition (as registered, if removed)


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action != "unchanged"]

    def of_team(self, team: str) -> Plan:
        """The changes to what ``team`` owns, and the refusals about them."""
        mine = [c for c in self.changes if c.owner == team]
        names = {f"{c.kind} {c.name!r}" for c in mine}
        refused = [r for r in self.refused if any(r.startswith(n + " ") for n in names)]
        return Plan(mine, refused)

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.changes:
            out[c.action] = out.get(c.action, 0) + 1
        return out


APPLIED_BY = "applied_by"  # kept in a registered definition's meta: who applied that version


def _meta(registered: RegisteredDefinition) -> dict[str, object]:
    return {k: v for k, v in registered.meta.items() if k != APPLIED_BY}


def make_plan(definitions: list[Definition], store: MetadataStore) -> Plan:
    registered = {(d.kind, d.name): d for d in store.definitions()}
    plan = Plan()
    seen = set()
    for d in definitions:
        key = (d.kind, d.name)
        seen.add(key)
        old = registered.get(key)
        if old is None:
            plan.changes.append(Change("added", d.kind, d.name, None, d.version, owner=d.owner))
        elif old.version != d.version:
            plan.changes.append(
                Change(
                    "changed",
                    d.kind,
                    d.name,
                    old.version,
                    d.version,
                    "new version: its meaning changed",
                    d.owner,
                )
            )
        elif d.deprecated and not old.meta.get("deprecated"):
            plan.changes.append(
                Change("deprecated", d.kind, d.name, old.version, d.version, owner=d.owner)
            )
        elif d.meta() != _meta(old):
            fields = sorted(k for k in d.meta() if d.meta()[k] != old.meta.get(k))
            plan.changes.append(
                Change(
                    "updated",
                    d.kind,
                    d.name,
                    old.version,
                    d.version,
                    "metadata: " + ", ".join(fields),
                    d.owner,
                )
            )
        else:
            plan.changes.append(
                Change("unchanged", d.kind, d.name, old.version, d.version, owner=d.owner)
            )
    for key, old in registered.items():
        if key in seen:
            continue
        owner = old.meta.get("owner")
        plan.changes.append(
            Change(
                "removed",
                old.kind,
                old.name,
                old.version,
                None,
                owner=owner if isinstance(owner, str) else None,
            )  # fmt: skip
        )
        if not old.meta.get("deprecated"):
            plan.refused.append(
                f"{old.kind} {old.name!r} is registered and in use; mark it deprecated "
                f"(deprecated=True), run `headwater apply`, then remove it"
            )
    return plan


def apply_plan(
    definitions: list[Definition], store: MetadataStore, now_us: int, by: str = "sdk"
) -> Plan:
    """Register what the plan adds, changes or updates, each recorded with who applied it."""
    plan = make_plan(definitions, store)
    if plan.refused:
        raise PlanRefused("apply refused:\n  " + "\n  ".join(plan.refused))
    by_key = {(d.kind, d.name): d for d in definitions}
    upserts = [
        RegisteredDefinition(
            c.kind,
            c.name,
            by_key[(c.kind, c.name)].version,
            by_key[(c.kind, c.name)].spec(),
            {**by_key[(c.kind, c.name)].meta(), APPLIED_BY: by},
            now_us,
        )
        for c in plan.pending
        if c.action != "removed"
    ]
    removals = [(c.kind, c.name) for c in plan.pending if c.action == "removed"]
    store.apply(upserts, removals)
    return plan
