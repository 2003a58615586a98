"""The Redis online store: one string per (feature set, entity), written in MULTI/EXEC.

The only module that imports redis-py; the backend registry imports it lazily.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

try:
    import redis
    from redis.typing import EncodableT, FieldT
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ModuleNotFoundError(
        "the Redis online store needs the redis extra: pip install 'headwater[redis]'"
    ) from exc

from headwater.definitions.source import redact_url
from headwater.errors import StoreUnavailable
from headwater.stores.online.base import OwnershipLost

_F = TypeVar("_F", bound=Callable[..., Any])


def _reachable(method: _F) -> _F:
    """Redis being unreachable (down, restarting, a timeout) as ``StoreUnavailable``."""

    @functools.wraps(method)
    def call(self: RedisOnlineStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"cannot reach Redis at {self._where}: {exc}") from exc

    return cast(_F, call)


_MSET_CHUNK = 10_000
# KEYS: the checkpoints and owners hashes; ARGV: n, n SCAN patterns of state keys, then the
# feature set ids whose checkpoint and owner fields go (the id itself, or the id and "@...").
_CLEAR_SCRIPT = """
local n = tonumber(ARGV[1])
for i = 2, n + 1 do
  local cursor = "0"
  repeat
    local found = redis.call("SCAN", cursor, "MATCH", ARGV[i], "COUNT", 1000)
    cursor = found[1]
    if #found[2] > 0 then redis.call("UNLINK", unpack(found[2])) end
  until cursor == "0"
end
for _, hash in ipairs(KEYS) do
  for _, name in ipairs(redis.call("HKEYS", hash)) do
    for i = n + 2, #ARGV do
      local fs = ARGV[i]
      if name == fs or string.sub(name, 1, #fs + 1) == fs .. "@" then
        redis.call("HDEL", hash, name)
        break
      end
    end
  end
end
"""


class RedisOnlineStore:
    """Feature-set states in Redis, one string key per (feature set, entity key).

    Layout, under ``namespace``:

    - ``{namespace}:s:{feature_set}:{entity_key}`` holds the encoded state of one entity for
      one feature set (a ``:`` or ``%`` in the feature set id is percent-escaped so the key is
      unambiguous; the entity key is stored as is, any characters allowed);
    - ``{namespace}:checkpoints`` is one hash of checkpoint name → offset;
    - ``{namespace}:owners`` is one hash of checkpoint name → the token of its owner.

    ``write`` checks every value on the client first, then sends the states (MSET, or one
    SET EX per key with a TTL) and the checkpoints' HSET in one MULTI/EXEC pipeline, so a
    call is applied entirely or not at all. (Redis does not roll back a command that fails
    *inside* EXEC; the only such failure here is a WRONGTYPE from a foreign value at the
    checkpoints key, i.e. another program writing into this namespace.) A write fenced by
    ``owners`` WATCHes the owners hash, compares the tokens, and sends its MULTI/EXEC, which
    Redis refuses if a claim changed the hash in between (then it compares again). ``clear`` is
    one Lua script, atomic like a write, which SCANs the feature sets' keys: it blocks Redis
    while it runs (a rebuild is rare, and the features are wrong until it is done anyway).

    ``state_ttl_seconds`` sets an expiry on every state written. The processor rewrites the
    state of each entity that has an event, so only entities idle longer than the TTL
    expire, and their state is lost. Choose a TTL longer than the longest window plus one
    hop and its allowed lateness (by then the windows are empty anyway), and keep None when
    a feature set has a lifetime feature, whose state must never expire.

    Usage: ``RedisOnlineStore("redis://localhost:6379/0", namespace="prod")``.
    """

    def __init__(
        self, url: str, namespace: str = "hw", *, state_ttl_seconds: int | None = None
    ) -> None:
        if state_ttl_seconds is not None and state_ttl_seconds <= 0:
            raise ValueError(f"state_ttl_seconds must be positive or None, not {state_ttl_seconds}")
        self._client = redis.Redis.from_url(url)
        self._where = redact_url(url)
        self._prefix = f"{namespace}:s:".encode()
        self._checkpoints_key = f"{namespace}:checkpoints".encode()
        self._owners_key = f"{namespace}:owners".encode()
        self._ttl = state_ttl_seconds

    def _key(self, feature_set: str, key: str) -> bytes:
        escaped = feature_set.replace("%", "%25").replace(":", "%3A")
        return self._prefix + escaped.encode() + b":" + key.encode()

    @_reachable
    def get_many(self, feature_set: str, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        found = self._client.mget([self._key(feature_set, k) for k in keys])
        return cast(list[bytes | None], found)

    @_reachable
    def get_sets(self, wanted: Mapping[str, Sequence[str]]) -> dict[str, list[bytes | None]]:
        names = [self._key(fs, k) for fs, keys in wanted.items() for k in keys]
        if not names:
            return {fs: [] for fs in wanted}
        found = iter(cast(list[bytes | None], self._client.mget(names)))  # one round trip
        return {fs: [next(found) for _ in keys] for fs, keys in wanted.items()}

    def change_mark(self) -> None:
        """None: a mark would cost a round trip of its own, as many as the states' read."""
        return None

    @_reachable
    def write(
        self,
        states: Mapping[str, Mapping[str, bytes]],
        checkpoints: Mapping[str, int],
        owners: Mapping[str, str] | None = None,
    ) -> None:
        _check(states, checkpoints)
        pairs = [(self._key(fs, k), v) for fs, values in states.items() for k, v in values.items()]
        with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    if owners:
                        pipe.watch(self._owners_key)
                        self._check_owners(pipe, owners)
                        pipe.multi()
                    self._queue(pipe, pairs, checkpoints)
                    if len(pipe):
                        pipe.execute()
                    return
                except redis.WatchError:
                    continue  # a claim came in between: compare the owners again

    def _queue(
        self,
        pipe: redis.client.Pipeline,
        pairs: list[tuple[bytes, bytes]],
        checkpoints: Mapping[str, int],
    ) -> None:
        if self._ttl is None:
            # MSET in chunks: several times faster than one SET per key, still in the MULTI
            for i in range(0, len(pairs), _MSET_CHUNK):
                pipe.mset(dict(pairs[i : i + _MSET_CHUNK]))
        else:
            for key, state in pairs:
                pipe.set(key, state, ex=self._ttl)
        if checkpoints:
            offsets: dict[FieldT, EncodableT] = dict(checkpoints.items())
            pipe.hset(self._checkpoints_key, mapping=offsets)

    def _check_owners(self, pipe: redis.client.Pipeline, owners: Mapping[str, str]) -> None:
        names = list(owners)
        found = cast(list[bytes | None], pipe.hmget(self._owners_key, names))
        lost = sorted(
            n for n, token in zip(names, found, strict=True) if token != owners[n].encode()
        )
        if lost:
            raise OwnershipLost(
                f"another processor claimed {', '.join(map(repr, lost))} since this one did; "
                "nothing of this write was applied"
            )

    @_reachable
    def claim(self, names: Sequence[str], token: str) -> None:
        if names:
            self._client.hset(self._owners_key, mapping=dict.fromkeys(names, token))

    @_reachable
    def clear(self, feature_sets: Sequence[str]) -> None:
        patterns = [_glob_escape(self._key(fs, "")) + b"*" for fs in feature_sets]
        self._client.eval(
            _CLEAR_SCRIPT,
            2,
            self._checkpoints_key,
            self._owners_key,
            len(patterns),
            *patterns,
            *feature_sets,
        )

    @_reachable
    def delete(self, states: Mapping[str, Sequence[str]]) -> int:
        keys = [self._key(fs, k) for fs, ks in states.items() for k in dict.fromkeys(ks)]
        return int(self._client.delete(*keys)) if keys else 0  # DEL of several keys is atomic

    @_reachable
    def checkpoints(self, names: Sequence[str]) -> dict[str, int]:
        if not names:
            return {}
        offsets = cast(list[bytes | None], self._client.hmget(self._checkpoints_key, list(names)))
        return {n: int(o) for n, o in zip(names, offsets, strict=True) if o is not None}

    def close(self) -> None:
        self._client.close()


def _check(states: Mapping[str, Mapping[str, bytes]], checkpoints: Mapping[str, int]) -> None:
    """Refuse a whole write before sending anything if any value has the wrong type."""
    for feature_set, values in states.items():
        for key, state in values.items():
            if not isinstance(state, bytes | bytearray | memoryview):
                raise TypeError(
                    f"state of {key!r} in feature set {feature_set!r} must be bytes, "
                    f"not {type(state).__name__}; nothing was written"
                )
    for name, offset in checkpoints.items():
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise TypeError(
                f"checkpoint {name!r} must be an int offset, not {type(offset).__name__}; "
                "nothing was written"
            )


def _glob_escape(raw: bytes) -> bytes:
    """``raw`` as a SCAN MATCH pattern that matches itself only."""
    out = bytearray()
    for byte in raw:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)
