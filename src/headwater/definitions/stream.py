"""Streams: named, schema'd sequences of raw events with keys, an event time and PII tags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from headwater.definitions.base import Definition, check_name
from headwater.definitions.expectations import Expectation
from headwater.definitions.types import DType, Field, parse_dtype
from headwater.definitions.windows import parse_duration
from headwater.errors import DefinitionError, did_you_mean

UNKNOWN_FIELD_POLICIES = ("reject", "keep", "drop")
# What happens to a PII field's value at ingest (privacy/policies.py applies them).
PII_POLICIES = ("pseudonymize", "encrypt", "drop")
DEFAULT_PII_POLICY = "pseudonymize"


class Stream(Definition):
    """A stream of raw events.

    >>> purchases = Stream(
    ...     "purchases",
    ...     fields={"user_id": "string", "amount": "float", "ts": "timestamp"},
    ...     key="user_id", time="ts", owner="payments", description="Completed checkouts",
    ... )
    >>> purchases.field("amount").dtype.value
    'float'
    """

    kind = "stream"

    def __init__(
        self,
        name: str,
        *,
        fields: Mapping[str, str | DType],
        key: str | Sequence[str],
        time: str,
        owner: str | None = None,
        description: str | None = None,
        pii: Sequence[str] | Mapping[str, str] = (),
        required: Sequence[str] = (),
        id_field: str = "event_id",
        unknown_fields: str = "reject",
        allowed_lateness: str | timedelta | None = None,
        expectations: Sequence[Expectation] = (),
        deprecated: bool = False,
        tags: Sequence[str] = (),
    ) -> None:
        self._init_common(name, owner, description, deprecated, tuple(tags))
        keys = (key,) if isinstance(key, str) else tuple(key)
        if not keys:
            raise DefinitionError(f"stream {name!r} needs at least one key field")
        types = {check_name("field", f): parse_dtype(t) for f, t in fields.items()}
        types.setdefault(time, DType.TIMESTAMP)
        if types[time] is not DType.TIMESTAMP:
            raise DefinitionError(f"stream {name!r}: time field {time!r} must be a timestamp")
        policies = pii_policies(name, pii)
        for group, label in (
            (keys, "key"),
            (tuple(policies), "pii"),
            (tuple(required), "required"),
        ):
            for f in group:
                if f not in types:
                    raise DefinitionError(
                        f"stream {name!r}: {label} field {f!r} is not among its fields"
                        + did_you_mean(f, list(types))
                    )
        for k in keys:
            if types[k] not in (DType.STRING, DType.INT):
                raise DefinitionError(f"stream {name!r}: key {k!r} must be a string or an int")
        if id_field in types and types[id_field] is not DType.STRING:
            raise DefinitionError(f"stream {name!r}: id field {id_field!r} must be a string")
        if unknown_fields not in UNKNOWN_FIELD_POLICIES:
            raise DefinitionError(
                f"stream {name!r}: unknown_fields must be one of {UNKNOWN_FIELD_POLICIES}"
            )
        for f, policy in policies.items():
            if f in (time, id_field):
                raise DefinitionError(
                    f"stream {name!r}: PII field {f!r} is the time or the id, which cannot be PII"
                )
            if f in keys and policy != "pseudonymize":
                raise DefinitionError(
                    f"stream {name!r}: key {f!r} can only be pseudonymized (the same id must "
                    f"give the same key everywhere), not {policy}"
                )
        for f, policy in policies.items():
            if policy != "drop" and types[f] is not DType.STRING:
                raise DefinitionError(
                    f"stream {name!r}: PII field {f!r} is a {types[f].value}; {policy} stores "
                    "text, so it needs a string field (or the policy drop)"
                )
        not_null = set(keys) | {time} | set(required)
        self.fields: dict[str, Field] = {
            f: Field(f, t, nullable=f not in not_null, pii=f in policies) for f, t in types.items()
        }
        self.pii_policies: dict[str, str] = policies
        self.keys = keys
        self.time = time
        self.id_field = id_field
        self.unknown_fields = unknown_fields
        self.allowed_lateness_us = (
            None if allowed_lateness is None else parse_duration(allowed_lateness)
        )
        for e in expectations:
            if not isinstance(e, Expectation):
                raise DefinitionError(f"stream {name!r}: expectations are Expectation(...)")
            self.field(e.column)  # an unknown field: "did you mean"
        self.expectations = tuple(expectations)

    def field(self, name: str) -> Field:
        try:
            return self.fields[name]
        except KeyError:
            raise DefinitionError(
                f"stream {self.name!r} has no field {name!r}"
                + did_you_mean(name, list(self.fields))
            ) from None

    @property
    def pii_fields(self) -> tuple[str, ...]:
        return tuple(f for f, spec in self.fields.items() if spec.pii)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "fields": {f: [s.dtype.value, s.nullable, s.pii] for f, s in self.fields.items()},
            "keys": list(self.keys),
            "time": self.time,
            "id_field": self.id_field,
            "unknown_fields": self.unknown_fields,
            "allowed_lateness_us": self.allowed_lateness_us,
            # expectations check values, never change them: not part of the version
            # pseudonymize, the default, adds nothing: versions of earlier streams stay the same
            **(
                {"pii_policies": self.pii_policies}
                if any(p != DEFAULT_PII_POLICY for p in self.pii_policies.values())
                else {}
            ),
        }


def pii_policies(stream: str, pii: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """Field -> policy; a list of fields means ``pseudonymize`` for each.

    >>> pii_policies("s", ["email"]), pii_policies("s", {"phone": "drop"})
    ({'email': 'pseudonymize'}, {'phone': 'drop'})
    """
    if isinstance(pii, str):
        pii = [pii]
    chosen = dict(pii) if isinstance(pii, Mapping) else dict.fromkeys(pii, DEFAULT_PII_POLICY)
    for f, policy in chosen.items():
        if policy not in PII_POLICIES:
            raise DefinitionError(
                f"stream {stream!r}: PII policy {policy!r} of field {f!r} is not one of "
                f"{', '.join(PII_POLICIES)}" + did_you_mean(str(policy), PII_POLICIES)
            )
    return chosen
