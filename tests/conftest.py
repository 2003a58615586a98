"""Shared fixtures: throwaway project folders."""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from headwater.history.engines.spark import SparkSettings

# Projects in tests pseudonymize PII with this secret (the processes they start inherit it);
# tests of the secret's own handling set or remove it themselves.
os.environ.setdefault("HEADWATER_PII_SECRET", "tests-only-pii-secret-0123456789abcdef")
from tests.kafka_broker import TansuBroker

# One local Spark for the tests: two cores, two shuffle partitions, tiny jobs listed in the
# driver and less of the JVM's hot code compiled
SPARK = SparkSettings(
    master="local[2]",
    conf=(
        ("spark.sql.shuffle.partitions", "2"),
        ("spark.default.parallelism", "2"),
        ("spark.sql.sources.parallelPartitionDiscovery.threshold", "100000"),
        ("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1"),
    ),
)
SHOP = Path(__file__).resolve().parents[1] / "src" / "headwater" / "examples" / "shop"

SMALL_DEFINITIONS = """
from headwater import Entity, Feature, Stream, agg, col

user = Entity("user", keys="user_id", owner="growth", description="A shopper")
orders = Stream(
    "orders",
    fields={"user_id": "string", "amount": "float", "status": "string", "ts": "timestamp"},
    key="user_id", time="ts", required=["amount"], owner="payments", description="Orders",
)
clicks = Stream(
    "clicks",
    fields={"user_id": "string", "ts": "timestamp"},
    key="user_id", time="ts", unknown_fields="keep", owner="web", description="Clicks",
)
features = [
    Feature("spend", entity=user, stream=orders, aggregation=agg.sum("amount"),
            windows=["1h", "7d", "lifetime"], where=col("status") == "paid",
            owner="payments", description="Money spent"),
    Feature("clicks", entity=user, stream=clicks, aggregation=agg.count(), windows=["1d"],
            owner="web", description="Clicks"),
]
"""


def tiny_model(**options: Any) -> Any:
    """A model of one (unresolved) feature, for tests of what a definition refuses."""
    from headwater import Entity, Label, Model, Stream, agg

    user = Entity("user", keys="user_id", owner="g", description="u")
    s = Stream("s", fields={"user_id": "string"}, key="user_id", time="ts", owner="g",
               description="s")  # fmt: skip
    label = Label("l", entity=user, stream=s, aggregation=agg.count(), horizon="1d",
                  owner="g", description="l")  # fmt: skip
    return Model("m", label=label, features=["a"], estimator=object, owner="g",
                 description="m", **options)  # fmt: skip


def write_project(folder: Path, definitions: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "headwater.toml").write_text(
        '[project]\nname = "test"\ndefinitions = ["definitions.py"]\n'
        "[ingest]\nmax_request_bytes = 200000\n"
    )
    (folder / "definitions.py").write_text(textwrap.dedent(definitions))
    return folder


@pytest.fixture
def small_project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "small", SMALL_DEFINITIONS)


@pytest.fixture
def shop_project(tmp_path: Path) -> Path:
    folder = tmp_path / "shop"
    folder.mkdir()
    for name in ("headwater.toml", "definitions.py"):
        shutil.copy(SHOP / name, folder / name)
    return folder


@pytest.fixture
def project_factory(tmp_path: Path) -> Callable[[str], Path]:
    counter = iter(range(1000))
    return lambda source: write_project(tmp_path / f"p{next(counter)}", source)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    """One Tansu broker on loopback for the session; tests keep apart by unique stream names."""
    broker = TansuBroker().start()
    yield broker
    broker.stop()
