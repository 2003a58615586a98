"""The online store port: per-entity feature-set states and the processor's checkpoints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from headwater.errors import HeadwaterError


class OwnershipLost(HeadwaterError):
    """A fenced write was refused: another processor claimed one of its checkpoints since."""


class OnlineStore(Protocol):
    """Holds the encoded state of each (feature set, entity) and processor checkpoints.

    Contract: ``write`` applies every state and every checkpoint of one call atomically (all
    or none), so a processor that commits its log offsets with its state replays to the same
    state after a crash. ``get_many`` returns one entry per key, None for unknown keys;
    ``get_sets`` does the same for several feature sets in one round trip (the serving path
    reads every feature set of a request at once).

    Owners fence processors that share the work: a processor ``claim``s the checkpoints it is
    about to advance with a token of its own, and passes ``owners`` (checkpoint name → its
    token) to each ``write``. Such a write applies only if every one of those names still
    holds that token, checked in the same atomic step, and otherwise raises ``OwnershipLost``
    and writes nothing; the last claim wins. ``clear`` removes, in one atomic step, every
    state of the given feature sets and every checkpoint and owner kept for them (the names
    equal to a feature set's id or starting with its id and ``@``, as per-partition names do).
    """

    def get_many(self, feature_set: str, keys: Sequence[str]) -> list[bytes | None]: ...

    def get_sets(self, wanted: Mapping[str, Sequence[str]]) -> dict[str, list[bytes | None]]: ...

    def change_mark(self) -> object | None:
        """A value that equals an earlier answer only if no state changed in between,
        through any connection or process, read in one step cheaper than reading states;
        None where the store cannot tell (readers then compare the bytes they read). A
        reader that takes the mark before reading states may reuse what it derived from
        them while the mark stays the same."""
        ...

    def write(
        self,
        states: Mapping[str, Mapping[str, bytes]],
        checkpoints: Mapping[str, int],
        owners: Mapping[str, str] | None = None,
    ) -> None: ...

    def checkpoints(self, names: Sequence[str]) -> dict[str, int]: ...

    def claim(self, names: Sequence[str], token: str) -> None:
        """Make ``token`` the owner of each name: later writes fenced by an earlier token of
        one of them are refused."""
        ...

    def clear(self, feature_sets: Sequence[str]) -> None: ...

    def delete(self, states: Mapping[str, Sequence[str]]) -> int:
        """Remove the states of these (feature set -> entity keys) in one atomic step (an
        entity's erasure); answers how many there were. Checkpoints stay."""
        ...

    def close(self) -> None: ...


def owned_by(name: str, feature_sets: Sequence[str]) -> bool:
    """Whether a checkpoint or owner name is kept for one of the feature sets.

    >>> owned_by("user@orders#1a2b@p3", ["user@orders#1a2b"]), owned_by("x", ["user@orders#1a2b"])
    (True, False)
    """
    return any(name == fs or name.startswith(fs + "@") for fs in feature_sets)
