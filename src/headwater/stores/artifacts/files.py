"""Artifacts as files under a local folder (the default) or any fsspec URL (``s3://``,
``gs://``, ``memory://``, a shared volume): each put is published whole, then never changed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from headwater.definitions.source import redact_url
from headwater.stores.artifacts.base import ArtifactError
from headwater.stores.files import open_files

_NAME = re.compile(r"^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$")


class FileArtifactStore:
    """Artifacts under ``root``: a local folder or any fsspec URL.

    >>> store = FileArtifactStore("memory://doctest/artifacts")
    >>> store.put("churn/r1/model.txt", b"tree")
    >>> store.get("churn/r1/model.txt"), store.names("churn")
    (b'tree', ['churn/r1/model.txt'])
    """

    def __init__(self, root: str | Path, storage_options: dict[str, Any] | None = None) -> None:
        self.url = redact_url(str(root))
        try:
            self._files, self._root = open_files(root, storage_options)
            self._files.glob(self._root, "*")  # reachable, readable: fail now, not at a save
        except ImportError as exc:
            raise ArtifactError(
                f"the artifacts store {self.url!r} needs its fsspec filesystem installed ({exc})"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any filesystem's failure, said clearly
            raise ArtifactError(
                f"the artifacts store {self.url!r} cannot be reached ({exc}); check the URL, "
                "the credentials in the environment and that the location exists"
            ) from None

    def _path(self, name: str) -> str:
        if not name:
            return self._root
        if not _NAME.match(name) or any(part in (".", "..") for part in name.split("/")):
            raise ArtifactError(f"{name!r} is not an artifact name (letters, digits, _.=- and /)")
        return f"{self._root}/{name}"

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        if self._files.exists(path):
            raise ArtifactError(f"artifact {name!r} exists in {self.url}; artifacts never change")
        self._files.publish(path, data)

    def get(self, name: str) -> bytes:
        try:
            return self._files.read_bytes(self._path(name))
        except FileNotFoundError:
            raise ArtifactError(f"artifact {name!r} is missing from {self.url}") from None

    def exists(self, name: str) -> bool:
        return self._files.exists(self._path(name))

    def names(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        found = self._files.find(base)
        start = len(self._root) + 1
        return sorted(p[start:] if p.startswith(self._root) else p for p in found if not _hidden(p))


def _hidden(path: str) -> bool:
    return path.rsplit("/", 1)[-1].startswith(".")
