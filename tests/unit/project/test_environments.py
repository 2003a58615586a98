"""Environments: which one a project opens in, the stores each gets (its own, or a namespace
on the shared ones), its server settings and PII secret; refusals name what to do."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from headwater import Project
from headwater.log.base import LogError
from headwater.log.kafka import KafkaSettings
from headwater.privacy.policies import PiiSecret, load_secret, secret_variable
from headwater.project.config import ConfigError, add_pii_secret, load_settings
from tests.conftest import SMALL_DEFINITIONS, write_project

TWO = """
[environments.production]
[environments.staging]
[environments.staging.server]
port = 8801
"""


def _project(tmp_path: Path, extra: str = "", head: str = "") -> Path:
    folder = write_project(tmp_path / "p", SMALL_DEFINITIONS)
    config = folder / "headwater.toml"
    text = config.read_text().replace('name = "test"\n', f'name = "test"\n{head}')
    config.write_text(text + extra)
    return folder


def test_a_project_without_environments_has_the_default_one_and_its_stores_as_named(tmp_path):
    folder = _project(tmp_path)
    settings = load_settings(folder, environ={})
    assert settings.environment.name == "default" and not settings.environment.declared
    assert settings.environment.namespace == ""
    assert settings.stores.log == "sqlite:///.headwater/log.db"
    assert load_settings(folder, "default", environ={}).stores == settings.stores
    with pytest.raises(ConfigError, match=r"declares no environments.*\[environments.staging\]"):
        load_settings(folder, "staging", environ={})


def test_the_environment_comes_from_the_argument_the_variable_or_the_default(tmp_path):
    folder = _project(tmp_path, TWO)
    with pytest.raises(ConfigError, match="choose one with --env NAME .*HEADWATER_ENV"):
        load_settings(folder, environ={})
    assert load_settings(folder, environ={"HEADWATER_ENV": "staging"}).environment.name == (
        "staging"
    )
    chosen = load_settings(folder, "production", environ={"HEADWATER_ENV": "staging"})
    assert chosen.environment.name == "production"
    with pytest.raises(ConfigError, match=r"no environment 'prod' .*declares production, stag"):
        load_settings(folder, "prod", environ={})
    usual = _project(tmp_path / "u", TWO, 'default_environment = "staging"\n')
    assert load_settings(usual, environ={}).environment.name == "staging"
    alone = _project(tmp_path / "a", "[environments.dev]\n")
    assert load_settings(alone, environ={}).environment.name == "dev"


def test_shared_stores_move_into_the_namespace_and_own_stores_stay_as_written(tmp_path):
    folder = _project(
        tmp_path,
        TWO.replace(
            "[environments.staging]\n",
            '[environments.staging]\n[environments.staging.stores]\nlog = "sqlite:////tmp/s.db"\n',
        ),
    )
    production = load_settings(folder, "production", environ={})
    staging = load_settings(folder, "staging", environ={})
    assert production.environment.namespace == "test_production"
    assert production.stores.log == "sqlite:///.headwater/test_production/log.db"
    assert production.stores.offline == "file://.headwater/offline/test_production"
    assert production.stores.monitor == "duckdb://.headwater/test_production/monitor.duckdb"
    assert staging.stores.log == "sqlite:////tmp/s.db"  # its own, as written
    assert staging.stores.online == "sqlite:///.headwater/test_staging/online.db"
    assert (production.server.port, staging.server.port) == (8800, 8801)


def test_environments_that_would_share_a_store_are_refused(tmp_path):
    same = _project(
        tmp_path,
        '[environments.production]\nnamespace = "x"\n[environments.staging]\nnamespace = "x"\n',
    )
    with pytest.raises(ConfigError, match="'production' and 'staging' .*would share the log"):
        load_settings(same, "staging", environ={})
    legacy = _project(
        tmp_path / "l", '[environments.production]\nnamespace = ""\n[environments.staging]\n'
    )
    assert load_settings(legacy, "production", environ={}).stores.log == (
        "sqlite:///.headwater/log.db"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[environments.staging]\nnamespace = "Bad Name"\n', "namespace must be lowercase"),
        ("[environments.staging]\nport = 1\n", "has no setting 'port'"),
        ("[environments.Prod]\n", "an environment's name is lowercase"),
        ('[environments.staging.stores]\ncache = "x"\n', "unknown store"),
        ("[environments.staging.pii]\nsecret = 'x'\n", "never goes in headwater.toml"),
    ],
)
def test_bad_environment_settings_are_refused_with_what_to_write(tmp_path, extra, message):
    folder = _project(tmp_path, extra)
    with pytest.raises(ConfigError, match=message):
        load_settings(folder, environ={})


def test_each_environment_has_its_own_pii_secret(tmp_path):
    folder = _project(tmp_path, TWO)
    path = add_pii_secret(folder, env="staging")
    assert path == folder / ".headwater" / "staging.pii.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "[environments.staging.pii]" in (folder / "headwater.toml").read_text()
    staging = load_settings(folder, "staging", environ={})
    assert staging.pii_secret_file == path
    assert load_settings(folder, "production", environ={}).pii_secret_file is None
    with pytest.raises(ConfigError, match="already names"):
        add_pii_secret(folder, env="staging")
    # the environment's own variable comes first, then the common one, then the file
    own, common = "o" * 40, "c" * 40
    environ = {secret_variable("staging"): own, "HEADWATER_PII_SECRET": common}
    assert load_secret(environ, path, "staging") == PiiSecret(own.encode())
    assert load_secret({"HEADWATER_PII_SECRET": common}, path, "staging") == PiiSecret(
        common.encode()
    )
    assert load_secret({}, path, "staging") == PiiSecret(path.read_text().strip().encode())
    assert load_secret({secret_variable("staging"): own}, None, "production") is None


def test_two_environments_of_one_folder_never_see_each_others_events(tmp_path):
    folder = _project(tmp_path, TWO)
    event = {"user_id": "u1", "amount": 3.0, "status": "paid", "ts": 1_700_000_000}
    with Project(folder, env="staging") as staging:
        assert staging.ingest("orders", [event]).accepted == 1
        staging.process()
        assert staging.log.end_offset("orders") == 1
        assert staging.online_features({"user_id": "u1"}, ["spend_lifetime"]) == {
            "spend_lifetime": 3.0
        }
    with Project(folder, env="production") as production:
        assert production.log.end_offset("orders") == 0
        production.process()
        row = production.online_features({"user_id": "u1"}, ["spend_lifetime"])
        assert row["spend_lifetime"] in (None, 0)
        with TestClient(production.app(), base_url="http://localhost") as client:
            ready = client.get("/readyz").json()
    assert (ready["project"], ready["environment"]) == ("test", "production")


def test_the_cli_takes_env_and_names_the_environment_on_every_command(tmp_path):
    folder = _project(tmp_path, TWO)
    env = {**os.environ, "HEADWATER_ENV": "staging"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "headwater", *args, "-p", str(folder)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    applied = run("apply")
    assert applied.returncode == 0 and "test · environment staging" in applied.stderr
    assert (folder / ".headwater" / "test_staging" / "metadata.db").exists()
    plan = run("plan", "--env", "production")
    assert "test · environment production" in plan.stderr and "added" in plan.stdout
    bad = run("plan", "--env", "prod")
    assert bad.returncode != 0 and "no environment 'prod'" in bad.stderr
    assert "Traceback" not in bad.stderr
    listed = run("environments").stdout
    assert "test_production" in listed and "test_staging" in listed
    assert ".headwater/test_staging/log.db" in listed
    itself = run("replay", "--from", "staging", "--to", "staging")
    assert itself.returncode == 1 and "the source and the target are the same log" in (
        itself.stderr
    )
    bad_share = run("replay", "--from", "staging", "--to", "production", "--sample-entities", "x")
    assert bad_share.returncode == 2 and "write 10% or 0.1" in bad_share.stderr


def test_a_kafka_prefix_holds_only_topic_characters():
    assert KafkaSettings.from_url("kafka://k:1?prefix=a_b.").topic("x") == "a_b.x"
    assert KafkaSettings.from_url("kafka://k:1?prefix=a_b.").stream("a_b.x") == "x"
    assert KafkaSettings.from_url("kafka://k:1?prefix=a_b.").stream("other.x") is None
    with pytest.raises(LogError, match="may hold only letters"):
        KafkaSettings.from_url("kafka://k:1?prefix=a/b")
