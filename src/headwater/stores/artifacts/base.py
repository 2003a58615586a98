"""The artifacts port: immutable files by name (model files), at a folder or any URL."""

from __future__ import annotations

from typing import Protocol

from headwater.errors import HeadwaterError


class ArtifactError(HeadwaterError):
    """An artifact is missing, was written already, or its store cannot be reached."""


class ArtifactStore(Protocol):
    """Files by name (``churn/3f2a9c/model.joblib``), written once and never changed.

    Contract: ``put`` makes the whole file visible at once (a reader never sees part of
    it; a failed put leaves nothing under the name) and refuses a name already written;
    ``get`` returns exactly the bytes put, or raises ``ArtifactError`` naming what is
    missing; ``names(prefix)`` lists what was put under ``prefix/``, sorted. ``url`` is
    where the store is, with any password redacted.
    """

    url: str

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes: ...

    def exists(self, name: str) -> bool: ...

    def names(self, prefix: str) -> list[str]: ...
