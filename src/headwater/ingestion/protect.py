"""PII policies applied at ingest, before anything is stored: to every accepted event and to
the copy of a rejected one that the dead-letter stream keeps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from headwater.definitions import Stream
from headwater.privacy.policies import SECRET_ENV, PiiSecret, PiiSecretError, secret_variable

WITHHELD = "withheld: the stream has PII fields and the event is not an object"


class Protector:
    """Each stream's PII policies, under one secret (None: no secret configured, so any
    stream with PII fields refuses its events with what to do)."""

    def __init__(self, secret: PiiSecret | None, environment: str | None = None) -> None:
        self._secret = secret
        self._environment = environment  # a declared environment, named in refusals

    def check(self, streams: Mapping[str, Stream]) -> None:
        """Refuse to start (a server, an ingest) without the secret that PII streams need."""
        needing = sorted(name for name, s in streams.items() if s.pii_policies)
        if needing and self._secret is None:
            raise missing_secret(needing, self._environment)

    def fields(self, stream: Stream, fields: dict[str, Any]) -> dict[str, Any]:
        """The fields of a valid event as they may be stored (changed in place)."""
        for name, policy in stream.pii_policies.items():
            if name not in fields:
                continue
            if policy == "drop":
                del fields[name]
            elif fields[name] is not None:
                fields[name] = self._pseudonym(stream, fields[name])
        return fields

    def rejected(self, stream: Stream | None, raw: Any) -> Any:
        """What the dead-letter stream may keep of a rejected event: its PII fields under their
        policies (whatever their type), and nothing of a PII stream's event that is not an
        object (its PII cannot be told apart)."""
        if stream is None or not stream.pii_policies:
            return raw
        if not isinstance(raw, Mapping):
            return WITHHELD
        kept = dict(raw)
        return self.fields(stream, kept)

    def _pseudonym(self, stream: Stream, value: Any) -> str:
        if self._secret is None:
            raise missing_secret([stream.name], self._environment)
        return self._secret.pseudonym(value)


def missing_secret(streams: list[str], environment: str | None = None) -> PiiSecretError:
    if environment is None:
        return PiiSecretError(
            f"stream(s) {', '.join(streams)} have PII fields and no PII secret is set: set "
            f"${SECRET_ENV} (32 bytes or more), or name a file of mode 600 holding it with "
            '[pii] secret_file = "PATH" in headwater.toml; `headwater pii init-secret` '
            "creates one"
        )
    return PiiSecretError(
        f"stream(s) {', '.join(streams)} have PII fields and the environment {environment!r} "
        f"has no PII secret: set ${secret_variable(environment)} (32 bytes or more), or "
        f"create one with `headwater pii init-secret --env {environment}`"
    )
