"""Redis and PostgreSQL out of reach: a clear error naming the store (its password hidden),
503 over HTTP, and the CLI's one-line error instead of a driver's traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from headwater import Project
from headwater.errors import StoreUnavailable
from headwater.stores.metadata.postgres import PostgresMetadataStore
from headwater.stores.online.redis import RedisOnlineStore
from tests.conftest import SMALL_DEFINITIONS, write_project
from tests.kafka_broker import free_port

LOCAL = "http://localhost"  # the server answers loopback Host names only


def test_an_unreachable_redis_is_a_store_error_naming_it() -> None:
    port = free_port()  # nothing listens there
    store = RedisOnlineStore(f"redis://user:s3cret@127.0.0.1:{port}/0")
    for call in (
        lambda: store.get_many("spend", ["u1"]),
        lambda: store.get_sets({"spend": ["u1"]}),
        lambda: store.checkpoints(["orders"]),
        lambda: store.write({"spend": {"u1": b"x"}}, {"orders": 1}),
    ):
        with pytest.raises(StoreUnavailable, match=f"cannot reach Redis at .*:{port}") as info:
            call()
        assert "s3cret" not in str(info.value) and "***" in str(info.value)
    store.close()


def test_an_unreachable_postgresql_is_a_store_error_naming_it() -> None:
    port = free_port()
    with pytest.raises(StoreUnavailable, match=f"cannot reach PostgreSQL at .*:{port}") as info:
        PostgresMetadataStore(f"postgresql://app:s3cret@127.0.0.1:{port}/test")
    assert "s3cret" not in str(info.value)


def _project_on(tmp_path, online: str):  # type: ignore[no-untyped-def]
    folder = write_project(tmp_path / "p", SMALL_DEFINITIONS)
    toml = folder / "headwater.toml"
    toml.write_text(toml.read_text() + f'[stores]\nonline = "{online}"\n')
    return folder


def test_http_answers_503_and_the_cli_one_line(tmp_path) -> None:
    folder = _project_on(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    with Project(folder) as p, TestClient(p.app(), base_url=LOCAL) as client:
        p.apply()
        r = client.post(
            "/v1/features", json={"entities": [{"user_id": "u1"}], "features": ["spend_7d"]}
        )
        assert r.status_code == 503, r.text
        assert "cannot reach Redis" in r.json()["detail"]
    proc = subprocess.run(
        [sys.executable, "-m", "headwater", "features", "user_id=u1", "-f", "spend_7d",
         "--project", str(folder)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cannot reach Redis" in proc.stderr and "Traceback" not in proc.stderr
