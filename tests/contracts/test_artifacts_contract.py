"""The artifacts port's contract (``stores/artifacts/base.py``), run over every backend: a new
backend is tested by adding one line to ``BACKENDS``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import pytest

from headwater.stores.artifacts.base import ArtifactError, ArtifactStore
from headwater.stores.urls import BackendError, open_artifacts

# name -> a function of a fresh temporary folder giving the URL of an empty store
BACKENDS: dict[str, Callable[[Path], str]] = {
    "local folder": lambda tmp: f"file://{tmp}/artifacts",
    "relative folder": lambda tmp: "file://.headwater/artifacts",
    "fsspec memory://": lambda tmp: f"memory://contract-{uuid.uuid4().hex}/artifacts",
}


@pytest.fixture(params=sorted(BACKENDS))
def store(request, tmp_path: Path) -> Iterator[ArtifactStore]:
    yield open_artifacts(BACKENDS[request.param](tmp_path), tmp_path)


def test_what_is_put_is_got_back_exactly(store):
    data = bytes(range(256)) * 1000
    store.put("churn/run1/model.joblib", data)
    assert store.get("churn/run1/model.joblib") == data
    assert store.exists("churn/run1/model.joblib")
    assert not store.exists("churn/run1/model.txt")


def test_names_lists_what_was_put_under_a_prefix_sorted(store):
    for name in ("churn/r2/b.json", "churn/r1/a.joblib", "churn/r1/a.json", "other/r1/x"):
        store.put(name, name.encode())
    assert store.names("churn") == ["churn/r1/a.joblib", "churn/r1/a.json", "churn/r2/b.json"]
    assert store.names("churn/r2") == ["churn/r2/b.json"]
    assert store.names("nothing") == []


def test_an_artifact_is_never_replaced(store):
    store.put("m/r/model.txt", b"first")
    with pytest.raises(ArtifactError, match="exists"):
        store.put("m/r/model.txt", b"second")
    assert store.get("m/r/model.txt") == b"first"


def test_a_missing_artifact_is_a_clear_error(store):
    with pytest.raises(ArtifactError, match=r"artifact 'm/r/model.joblib' is missing from"):
        store.get("m/r/model.joblib")


@pytest.mark.parametrize("name", ["../escape", "m/../../x", "/abs/path", "m//r", "", "a b"])
def test_names_that_could_leave_the_store_are_refused(store, name):
    with pytest.raises(ArtifactError, match="not an artifact name"):
        store.put(name or "/", b"x")


def test_a_put_that_fails_midway_leaves_nothing_visible(store, monkeypatch):
    files = store._files  # type: ignore[attr-defined]
    real = files.publish

    def fail(path: str, data: bytes) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files, "publish", fail)
    with pytest.raises(OSError, match="disk full"):
        store.put("m/r/model.joblib", b"x" * 100)
    monkeypatch.setattr(files, "publish", real)
    assert not store.exists("m/r/model.joblib")
    assert store.names("m") == []
    store.put("m/r/model.joblib", b"whole")  # the name is still free
    assert store.get("m/r/model.joblib") == b"whole"


def test_a_local_publish_interrupted_after_its_temporary_file_shows_nothing(tmp_path, monkeypatch):
    import headwater.stores.files as files

    store = open_artifacts(f"file://{tmp_path}/a", tmp_path)

    def crash(path: Path) -> None:
        raise OSError(f"killed while syncing {path.name}")

    monkeypatch.setattr(files, "fsync", crash)
    with pytest.raises(OSError, match="killed while syncing"):
        store.put("m/r/model.joblib", b"x" * 100)
    monkeypatch.undo()
    assert not store.exists("m/r/model.joblib") and store.names("m") == []
    assert any(p.name.startswith(".") for p in (tmp_path / "a" / "m" / "r").iterdir())


def test_two_stores_at_one_url_share_their_artifacts(tmp_path):
    url = f"memory://shared-{uuid.uuid4().hex}/artifacts"
    open_artifacts(url, tmp_path).put("m/r/model.txt", b"tree")
    assert open_artifacts(url, tmp_path / "elsewhere").get("m/r/model.txt") == b"tree"


def test_an_unknown_scheme_names_the_known_ones(tmp_path):
    with pytest.raises(BackendError, match=r"no artifacts backend for 'ftp://u:\*\*\*@h/x'"):
        open_artifacts("ftp://u:secret@h/x", tmp_path)


def test_a_missing_filesystem_package_fails_at_open_with_the_url_redacted(tmp_path):
    # s3fs is in no extra of headwater: s3:// needs it installed by the user
    with pytest.raises(ImportError):
        fsspec.get_filesystem_class("s3")
    with pytest.raises(ArtifactError) as info:
        open_artifacts("s3://key:s3cret@bucket/artifacts", tmp_path)
    assert "s3cret" not in str(info.value) and "bucket/artifacts" in str(info.value)


def test_an_unwritable_folder_fails_at_open_and_says_what_to_check(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ArtifactError, match="cannot be reached .*check the URL"):
        open_artifacts(f"file://{blocker}/artifacts", tmp_path)
