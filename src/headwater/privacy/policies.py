"""PII policies, applied to a field's value at ingest before anything is stored.

- ``pseudonymize``: HMAC-SHA256 of the value under the PII secret. Deterministic, so keys,
  joins and ``count_distinct`` still work; the clear value cannot be recovered from it.
- ``encrypt``: AES-SIV (deterministic authenticated encryption) under a data key of the
  event's entity (its stream's first key value), so ``count_distinct`` per entity still works;
  recoverable with the secret (``headwater pii reveal``). Each data key is stored wrapped
  (AES-GCM under a key derived from the secret) by an id derived from the entity key; deleting
  it (``headwater pii erase``) makes every encrypted value of the entity unreadable for good.
- ``drop``: the field is not stored at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from headwater.errors import HeadwaterError

POLICIES = ("pseudonymize", "encrypt", "drop")
SECRET_ENV = "HEADWATER_PII_SECRET"
PSEUDONYM_PREFIX = "pii_"
ENCRYPTED_PREFIX = "enc_"
KEY_ID_PREFIX = "dk_"
MIN_SECRET_BYTES = 32


class PiiSecretError(HeadwaterError):
    """The PII secret is missing, too short, or kept where others can read it."""


class UnreadableValue(HeadwaterError):
    """An encrypted value cannot be decrypted: its data key was erased, or it was made under
    another secret, or it was altered."""


@dataclass(frozen=True, repr=False)
class PiiSecret:
    """The secret of one environment; ``repr`` never shows it."""

    value: bytes

    def __repr__(self) -> str:
        return "PiiSecret(...)"

    def _derive(self, purpose: bytes) -> bytes:
        return hmac.new(self.value, b"headwater/" + purpose, hashlib.sha256).digest()

    def pseudonym(self, value: object) -> str:
        """The value's pseudonym: stable for one secret, unrelated between secrets.

        >>> secret = PiiSecret(b"s" * 32)
        >>> secret.pseudonym("ada@mail.example") == secret.pseudonym("ada@mail.example")
        True
        >>> secret.pseudonym("ada@mail.example").startswith("pii_")
        True
        """
        mac = self._pseudonym_mac.copy()  # the keyed state, copied: 2x faster than a new one
        mac.update(str(value).encode())
        return PSEUDONYM_PREFIX + mac.digest()[:16].hex()

    def key_id(self, field: str, value: object) -> str:
        """The id of the data key of the entity whose key ``field`` is ``value``: derived from
        the secret, so the store of data keys holds no clear key value.

        >>> PiiSecret(b"s" * 32).key_id("user_id", "u1").startswith("dk_")
        True
        """
        mac = hmac.new(self._derive(b"data-key-id"), digestmod=hashlib.sha256)
        mac.update(f"{field}\x00{value}".encode())
        return KEY_ID_PREFIX + mac.digest()[:16].hex()

    def wrap(self, key_id: str, data_key: bytes) -> str:
        """``data_key`` encrypted (AES-GCM, bound to its id) under the secret's wrapping key."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        sealed = AESGCM(self._derive(b"wrap")).encrypt(nonce, data_key, key_id.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def unwrap(self, key_id: str, wrapped: str) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        raw = base64.urlsafe_b64decode(wrapped)
        try:
            return AESGCM(self._derive(b"wrap")).decrypt(raw[:12], raw[12:], key_id.encode())
        except InvalidTag:
            raise UnreadableValue(
                f"the data key {key_id} was wrapped under another PII secret"
            ) from None

    @cached_property
    def _pseudonym_mac(self) -> hmac.HMAC:
        return hmac.new(self._derive(b"pseudonymize"), digestmod=hashlib.sha256)


def secret_variable(environment: str | None) -> str:
    """The variable holding the PII secret of one environment only.

    >>> secret_variable("staging-eu")
    'HEADWATER_PII_SECRET_STAGING_EU'
    """
    if not environment:
        return SECRET_ENV
    return f"{SECRET_ENV}_{re.sub(r'[^A-Z0-9]', '_', environment.upper())}"


def load_secret(
    environ: Mapping[str, str], secret_file: Path | None, environment: str | None = None
) -> PiiSecret | None:
    """The PII secret of ``environment`` from ``$HEADWATER_PII_SECRET_<ENVIRONMENT>``, else
    ``$HEADWATER_PII_SECRET``, else ``secret_file`` (which must be a file of its owner only:
    mode 600); None when none is given."""
    origin = secret_variable(environment)
    text = environ.get(origin)
    if text is None:
        origin, text = SECRET_ENV, environ.get(SECRET_ENV)
    origin = f"${origin}"
    if text is None and secret_file is not None:
        origin = str(secret_file)
        try:
            info = secret_file.stat()
        except FileNotFoundError:
            raise PiiSecretError(
                f"the PII secret file {secret_file} does not exist; create one with "
                f"`headwater pii init-secret -p PROJECT` (or set ${SECRET_ENV})"
            ) from None
        if not stat.S_ISREG(info.st_mode):
            raise PiiSecretError(f"the PII secret file {secret_file} is not a regular file")
        if info.st_mode & 0o077 or info.st_uid != os.getuid():
            raise PiiSecretError(
                f"the PII secret file {secret_file} can be read by others: it must belong to "
                f"you with mode 600 (chmod 600 {secret_file})"
            )
        text = secret_file.read_text().strip()
    if text is None:
        return None
    value = text.strip().encode()
    if len(value) < MIN_SECRET_BYTES:
        raise PiiSecretError(
            f"the PII secret in {origin} is {len(value)} bytes; it needs at least "
            f"{MIN_SECRET_BYTES} (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return PiiSecret(value)


def create_secret_file(path: Path) -> None:
    """A new random secret in a file only its owner can read (never overwrites one)."""
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")


_PSEUDONYM = re.compile(r"pii_[0-9a-f]{32}")


def is_pseudonym(value: object) -> bool:
    """Whether ``value`` is a pseudonym (``pii_`` and 32 hex digits)."""
    return isinstance(value, str) and _PSEUDONYM.fullmatch(value) is not None


class KeyPseudonyms:
    """Entity keys that are PII, where clear ids enter a read path (online features,
    predictions, training sets, batch scoring): each value of a PII key field becomes the
    pseudonym the stores hold. Idempotent: a pseudonym stays as it is, so a path that is
    handed stored keys (the trainer's, a stream's) is unchanged. Without PII keys, rows pass
    through untouched; without a secret, a read that needs one raises ``refusal()``."""

    def __init__(
        self,
        fields: frozenset[str] = frozenset(),
        secret: PiiSecret | None = None,
        refusal: Callable[[], Exception] | None = None,
    ) -> None:
        self.fields, self._secret, self._refusal = fields, secret, refusal

    def value(self, value: object) -> object:
        if value is None or is_pseudonym(value):
            return value
        if self._secret is None:
            raise (self._refusal or _no_secret)()
        return self._secret.pseudonym(value)

    def rows(self, rows: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
        if not self.fields:
            return rows
        out: list[Mapping[str, Any]] = []
        for row in rows:
            present = [f for f in self.fields if isinstance(row, Mapping) and f in row]
            if present:
                row = dict(row)
                for f in present:
                    row[f] = self.value(row[f])
            out.append(row)
        return out

    def values(self, values: Sequence[object]) -> list[object]:
        return [self.value(v) for v in values]


def _no_secret() -> Exception:
    return PiiSecretError("entity keys are PII and no PII secret is set")


def new_data_key() -> bytes:
    """A random AES-256-SIV key (64 bytes)."""
    return os.urandom(64)


def encrypt_value(data_key: bytes, value: object, context: str) -> str:
    """``value`` (as text) encrypted under ``data_key``, bound to ``context`` (stream and
    field): deterministic, so one entity's equal values are equal ciphertexts.

    >>> key = new_data_key()
    >>> token = encrypt_value(key, "ada@mail.example", "signups.email")
    >>> token == encrypt_value(key, "ada@mail.example", "signups.email"), token[:4]
    (True, 'enc_')
    >>> decrypt_value(key, token, "signups.email")
    'ada@mail.example'
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    sealed = AESSIV(data_key).encrypt(str(value).encode(), [context.encode()])
    return ENCRYPTED_PREFIX + base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def decrypt_value(data_key: bytes, token: str, context: str) -> str:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    body = token.removeprefix(ENCRYPTED_PREFIX)
    try:
        sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return AESSIV(data_key).decrypt(sealed, [context.encode()]).decode()
    except (InvalidTag, ValueError):
        raise UnreadableValue(f"{token[:16]}... does not decrypt under this entity's key") from None
