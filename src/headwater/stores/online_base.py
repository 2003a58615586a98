"""The online store port: per-entity feature-set states and the processor's checkpoints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class OnlineStore(Protocol):
    """Holds the encoded state of each (feature set, entity) and processor checkpoints.

    Contract: ``write`` applies every state and every checkpoint of one call atomically (all
    or none), so a processor that commits its log offsets with its state replays to the same
    state after a crash. ``get_many`` returns one entry per key, None for unknown keys;
    ``get_sets`` does the same for several feature sets in one round trip (the serving path
    reads every feature set of a request at once).
    """

    def get_many(self, feature_set: str, keys: Sequence[str]) -> list[bytes | None]: ...

    def get_sets(self, wanted: Mapping[str, Sequence[str]]) -> dict[str, list[bytes | None]]: ...

    def write(
        self, states: Mapping[str, Mapping[str, bytes]], checkpoints: Mapping[str, int]
    ) -> None: ...

    def checkpoints(self, names: Sequence[str]) -> dict[str, int]: ...

    def close(self) -> None: ...
