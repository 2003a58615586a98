"""PII policies applied at ingest, before anything is stored: to every accepted event and to
the copy of a rejected one that the dead-letter stream keeps; and the per-entity data keys of
the ``encrypt`` policy, kept wrapped in the metadata store."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from headwater.definitions import Stream
from headwater.privacy.policies import (
    SECRET_ENV,
    PiiSecret,
    PiiSecretError,
    UnreadableValue,
    decrypt_value,
    encrypt_value,
    is_pseudonym,
    new_data_key,
    secret_variable,
)
from headwater.stores.metadata.base import MetadataStore

WITHHELD = "withheld: the stream has PII fields and the event is not an object"
NO_KEY = "withheld: the event has no key to encrypt it under"
DATA_KEYS = "pii_data_keys"  # the metadata collection of wrapped data keys
_CACHED = 100_000  # data keys kept unwrapped in memory


class DataKeys:
    """Per-entity data keys: created on an entity's first encrypted value (the first writer's
    key wins when two ingest at once: ``add_records`` keeps it), stored wrapped under the
    secret by ids derived from the entity key, cached unwrapped in memory."""

    def __init__(self, metadata: MetadataStore, secret: PiiSecret) -> None:
        self._metadata, self._secret = metadata, secret
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def key_id(self, field: str, value: object) -> str:
        return self._secret.key_id(field, value)

    def get(self, key_ids: Iterable[str], create: bool = True) -> dict[str, bytes]:
        """The data keys of ``key_ids`` (made for those that have none, with ``create``)."""
        wanted = list(dict.fromkeys(key_ids))
        with self._lock:
            found = {k: self._cache[k] for k in wanted if k in self._cache}
        missing = [k for k in wanted if k not in found]
        if missing:
            stored = self._metadata.get_records(DATA_KEYS, missing)
            new = [k for k in missing if k not in stored]
            if new and create:
                made = [(k, {"wrapped": self._secret.wrap(k, new_data_key())}) for k in new]
                stored.update(self._metadata.add_records(DATA_KEYS, made))
            unwrapped = {k: self._secret.unwrap(k, doc["wrapped"]) for k, doc in stored.items()}
            with self._lock:
                for k, key in unwrapped.items():
                    self._cache[k] = key
                while len(self._cache) > _CACHED:
                    self._cache.popitem(last=False)
            found.update(unwrapped)
        return found

    def erase(self, key_ids: Sequence[str]) -> int:
        """Delete data keys for good; answers how many there were."""
        with self._lock:
            for k in key_ids:
                self._cache.pop(k, None)
        return self._metadata.delete_records(DATA_KEYS, key_ids)


class Protector:
    """Each stream's PII policies, under one secret (None: no secret configured, so any
    stream with PII fields refuses its events with what to do); ``keys``: the data keys of
    the ``encrypt`` policy (None: streams with encrypted fields refuse their events)."""

    def __init__(
        self,
        secret: PiiSecret | None,
        environment: str | None = None,
        keys: DataKeys | None = None,
    ) -> None:
        self._secret = secret
        self._environment = environment  # a declared environment, named in refusals
        self._keys = keys

    @property
    def secret(self) -> PiiSecret | None:
        return self._secret

    @property
    def environment(self) -> str | None:
        return self._environment

    def erase(self, field: str, value: object, streams: Sequence[str]) -> int:
        """Delete for good the data key of the entity whose key ``field`` holds ``value`` (as
        stored), so its values in ``streams`` cannot be decrypted; answers 1, or 0 when it had
        none."""
        if self._keys is None:
            raise missing_secret(list(streams), self._environment)
        return self._keys.erase([self._keys.key_id(field, value)])

    def check(self, streams: Mapping[str, Stream]) -> None:
        """Refuse to start (a server, an ingest) without the secret that PII streams need."""
        needing = sorted(name for name, s in streams.items() if s.pii_policies)
        if needing and self._secret is None:
            raise missing_secret(needing, self._environment)

    def prepare(self, stream: Stream, rows: Sequence[Any]) -> None:
        """Load (or make) at once the data keys the rows' encrypted fields need."""
        if self._keys is None or "encrypt" not in stream.pii_policies.values():
            return
        first = stream.keys[0]
        ids = [
            self._keys.key_id(first, self.owner(stream, row))
            for row in rows
            if isinstance(row, Mapping)
            and row.get(first) is not None
            and not isinstance(row.get(first), (dict, list))
        ]
        if ids:
            self._keys.get(ids)

    def fields(self, stream: Stream, fields: dict[str, Any]) -> dict[str, Any]:
        """The fields of a valid event as they may be stored (changed in place)."""
        for name, policy in stream.pii_policies.items():
            if name not in fields:
                continue
            if policy == "drop":
                del fields[name]
            elif fields[name] is None:
                continue
            elif policy == "encrypt":
                fields[name] = self._encrypt(stream, name, fields)
            elif name in stream.keys and is_pseudonym(fields[name]):
                continue  # a key given as its pseudonym already, as read paths accept it
            else:
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

    def reveal(self, stream: Stream, fields: dict[str, Any]) -> dict[str, Any]:
        """A stored event with its encrypted fields decrypted (changed in place); a value whose
        data key was erased reads as None."""
        if self._keys is None:
            raise missing_secret([stream.name], self._environment)
        first = stream.keys[0]
        for name, policy in stream.pii_policies.items():
            token = fields.get(name)
            if policy != "encrypt" or not isinstance(token, str):
                continue
            key_id = self._keys.key_id(first, self.owner(stream, fields))
            key = self._keys.get([key_id], create=False).get(key_id)
            try:
                fields[name] = (
                    None if key is None else decrypt_value(key, token, f"{stream.name}.{name}")
                )
            except UnreadableValue:
                fields[name] = None
        return fields

    def _encrypt(self, stream: Stream, name: str, fields: Mapping[str, Any]) -> str:
        if self._keys is None:
            raise missing_secret([stream.name], self._environment)
        owner = self.owner(stream, fields)
        if owner is None or isinstance(owner, (dict, list)):
            return NO_KEY  # only a rejected event lacks its key: its dead letter keeps this
        key_id = self._keys.key_id(stream.keys[0], owner)
        key = self._keys.get([key_id])[key_id]
        return encrypt_value(key, fields[name], f"{stream.name}.{name}")

    def owner(self, stream: Stream, fields: Mapping[str, Any]) -> Any:
        """The key value an event's data key belongs to: the stream's first key, as stored
        (its pseudonym when the key is PII, whichever policy ran first)."""
        value = fields.get(stream.keys[0])
        if value is None or stream.pii_policies.get(stream.keys[0]) != "pseudonymize":
            return value
        return value if is_pseudonym(value) else self._pseudonym(stream, value)

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
