"""API keys: random 256-bit secrets shown once, kept only as SHA-256 digests in the metadata
store, checked in constant time, with a cache short enough that a revocation is seen by every
worker and replica within ``CACHE_SECONDS``.

A key reads ``hw_<id>_<secret>``: the id is public (it names the key in ``keys list`` and in
the audit stream), the secret is 32 random bytes in URL-safe base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from headwater.errors import HeadwaterError
from headwater.security.scopes import Scope, parse_scope
from headwater.stores.metadata.base import MetadataStore

KEYS = "api_keys"  # the metadata collection
CACHE_SECONDS = 5.0
# an unknown key id re-reads the store at most this often (a new key works at once, and
# random ids cannot make every request a query)
MISS_REFRESH_SECONDS = 0.5
VERIFIED_TOKENS = 10_000  # at most this many tokens remembered between two snapshots
_TOKEN = re.compile(r"hw_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_TEAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}")


class KeyManagementError(HeadwaterError):
    """A key operation that cannot be done (unknown key id, bad team name)."""


class Unauthenticated(HeadwaterError):
    """No valid key: missing, malformed, unknown, revoked or expired (the reason says which)."""


@dataclass(frozen=True)
class ApiKey:
    """A key as stored, without its secret."""

    id: str
    team: str
    scopes: tuple[Scope, ...]
    created_us: int
    created_by: str
    expires_us: int | None = None
    revoked_us: int | None = None
    description: str = ""

    def state(self, now_us: int) -> str:
        if self.revoked_us is not None:
            return "revoked"
        if self.expires_us is not None and now_us >= self.expires_us:
            return "expired"
        return "active"

    def document(self, digest: str) -> dict[str, object]:
        return {
            "team": self.team,
            "scopes": [str(s) for s in self.scopes],
            "digest": digest,
            "created_us": self.created_us,
            "created_by": self.created_by,
            "expires_us": self.expires_us,
            "revoked_us": self.revoked_us,
            "description": self.description,
        }


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_team(team: str) -> str:
    if not _TEAM.fullmatch(team):
        raise KeyManagementError(
            f"invalid team {team!r}: letters, digits and _ . @ + - (a definition's owner)"
        )
    return team


class KeyStore:
    """Create, list, revoke and verify keys (``keys`` collection of the metadata store)."""

    def __init__(
        self,
        metadata: MetadataStore,
        clock: Callable[[], int],
        cache_seconds: float = CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metadata = metadata
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._snapshot: dict[str, tuple[ApiKey, str]] = {}
        self._read_at = float("-inf")
        # tokens verified against the current snapshot (emptied with it, so for at most
        # ``cache_seconds``, in memory only): a known token skips the parse and the digest,
        # a tenth of a request's time on the server
        self._verified: dict[str, ApiKey] = {}

    def create(
        self,
        team: str,
        scopes: Sequence[str],
        *,
        by: str,
        expires_us: int | None = None,
        description: str = "",
    ) -> tuple[ApiKey, str]:
        """A new key and its secret token (the only time the secret exists outside the
        caller: only its digest is stored)."""
        if not scopes:
            raise KeyManagementError("a key needs at least one --scope")
        parsed = tuple(dict.fromkeys(parse_scope(s) for s in scopes))
        key_id = secrets.token_hex(8)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        now = self._clock()
        if expires_us is not None and expires_us <= now:
            raise KeyManagementError("the expiry must be in the future")
        key = ApiKey(key_id, check_team(team), parsed, now, by, expires_us, description=description)
        self._metadata.put_records([(KEYS, key_id, key.document(digest(secret)))])
        self._read_at = float("-inf")  # this store's next verify sees the new key
        return key, f"hw_{key_id}_{secret}"

    def list(self) -> list[ApiKey]:
        return sorted((key for key, _ in self._read().values()), key=lambda k: (k.created_us, k.id))

    def get(self, key_id: str) -> ApiKey:
        found = self._read().get(key_id)
        if found is None:
            raise KeyManagementError(f"no key with id {key_id!r}; `headwater keys list` shows them")
        return found[0]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key: refused everywhere within ``CACHE_SECONDS``."""
        key, key_digest = self._read().get(key_id) or (None, "")
        if key is None:
            raise KeyManagementError(f"no key with id {key_id!r}; `headwater keys list` shows them")
        if key.revoked_us is None:
            key = ApiKey(**{**key.__dict__, "revoked_us": self._clock()})
            self._metadata.put_records([(KEYS, key_id, key.document(key_digest))])
            self._read_at = float("-inf")  # refused here at once, elsewhere within the cache
        return key

    def verify(self, token: str) -> ApiKey:
        """The active key ``token`` is the secret of; ``Unauthenticated`` with the reason
        otherwise. Served from a snapshot at most ``cache_seconds`` old."""
        verified = self._verified  # the one of the snapshot this call reads
        known = verified.get(token)
        if known is not None and self._monotonic() - self._read_at <= self._cache_seconds:
            return self._active(known)
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise Unauthenticated("malformed API key (expected hw_<id>_<secret>)")
        key_id, secret = match.groups()
        found = self._cached(key_id)
        # compare digests in constant time, and do the same work for an unknown id
        expected = found[1] if found else "0" * 64
        if not hmac.compare_digest(digest(secret), expected) or found is None:
            raise Unauthenticated("unknown API key")
        key = self._active(found[0])
        with self._lock:  # not into the next snapshot's: the key may be revoked there
            if verified is self._verified and len(verified) < VERIFIED_TOKENS:
                verified[token] = key
        return key

    def _active(self, key: ApiKey) -> ApiKey:
        state = key.state(self._clock())
        if state != "active":
            raise Unauthenticated(f"API key {key.id} is {state}")
        return key

    def _cached(self, key_id: str) -> tuple[ApiKey, str] | None:
        age = self._monotonic() - self._read_at
        if age > self._cache_seconds:
            return self._read().get(key_id)
        found = self._snapshot.get(key_id)
        if found is None and age > MISS_REFRESH_SECONDS:
            return self._read().get(key_id)
        return found

    def _read(self) -> dict[str, tuple[ApiKey, str]]:
        with self._lock:
            docs = self._metadata.get_records(KEYS)
            snapshot = {key_id: _key(key_id, doc) for key_id, doc in docs.items()}
            self._snapshot, self._read_at = snapshot, self._monotonic()
            self._verified = {}
            return snapshot


def _key(key_id: str, doc: dict[str, object]) -> tuple[ApiKey, str]:
    scopes = doc["scopes"]
    assert isinstance(scopes, list)
    return (
        ApiKey(
            id=key_id,
            team=str(doc["team"]),
            scopes=tuple(parse_scope(str(s)) for s in scopes),
            created_us=int(doc["created_us"]),  # type: ignore[call-overload]
            created_by=str(doc["created_by"]),
            expires_us=_optional_int(doc.get("expires_us")),
            revoked_us=_optional_int(doc.get("revoked_us")),
            description=str(doc.get("description", "")),
        ),
        str(doc["digest"]),
    )


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]
