"""Source definitions: checked when declared, registered by plan/apply, positions and ids that
survive a round trip through JSON and a change of session time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pytest

from headwater import DefinitionError, FolderSource, Project, Stream, TableSource
from headwater.sources.base import SourceError
from headwater.sources.table import decode_value, encode_value, event_id, open_reader
from tests.conftest import write_project

ORDERS = Stream(
    "orders",
    fields={"user_id": "string", "amount": "float", "ts": "timestamp"},
    key="user_id",
    time="ts",
    required=["amount"],
    owner="payments",
    description="Orders",
)
OWNED = {"owner": "payments", "description": "The orders table"}


def _table(**overrides: object) -> TableSource:
    kwargs: dict[str, object] = {
        "stream": ORDERS,
        "url": "postgresql://app:secret@db/shop",
        "table": "public.orders",
        "cursor": "updated_at",
        "key": "id",
        **OWNED,
        **overrides,
    }
    return TableSource("orders_db", **kwargs)  # type: ignore[arg-type]


def test_a_table_source_is_checked_when_declared() -> None:
    source = _table(columns={"customer": "user_id", "total": "amount", "created_at": "ts"})
    assert source.order_by == ("updated_at", "id")
    assert source.spec()["url"] == "postgresql://app:***@db/shop"  # no secret in metadata
    assert _table(cursor="id").order_by == ("id",)  # a serial key is its own tie-breaker

    with pytest.raises(DefinitionError, match="did you mean 'amount'"):
        _table(columns={"total": "amout"})
    with pytest.raises(DefinitionError, match="requires field 'amount'"):
        _table(columns={"customer": "user_id", "created_at": "ts"})
    with pytest.raises(DefinitionError, match="is not a table name"):
        _table(table="orders; drop table users")
    with pytest.raises(DefinitionError, match="needs key="):
        _table(key=[])
    with pytest.raises(DefinitionError, match="has no owner"):
        TableSource("x", stream=ORDERS, url="postgresql://h/db", table="t", cursor="c", key="k")
    with pytest.raises(DefinitionError, match="duration"):
        _table(delay="soon")


def test_a_folder_source_is_checked_when_declared() -> None:
    source = FolderSource("drop", stream=ORDERS, path="landing", pattern="*.csv", **OWNED)
    assert source.settle_us == 5_000_000 and source.spec()["pattern"] == "*.csv"
    assert FolderSource("d", stream=ORDERS, path="x", settle=None, **OWNED).settle_us is None
    with pytest.raises(DefinitionError, match="format must be one of"):
        FolderSource("drop", stream=ORDERS, path="landing", format="xml", **OWNED)
    with pytest.raises(DefinitionError, match="relative glob"):
        FolderSource("drop", stream=ORDERS, path="landing", pattern="/etc/*", **OWNED)


def test_sources_are_collected_planned_and_versioned(tmp_path: Path) -> None:
    definitions = """
    from headwater import FolderSource, Stream

    orders = Stream("orders", fields={"user_id": "string", "ts": "timestamp"}, key="user_id",
                    time="ts", owner="payments", description="Orders")
    sources = [FolderSource("drop", stream=orders, path="landing", owner="payments",
                            description="Exports")]
    """
    path = write_project(tmp_path / "p", definitions)
    with Project(path) as p:
        assert list(p.definitions.sources) == ["drop"]
        plan = p.apply()
        assert ("source", "drop", "added") in {(c.kind, c.name, c.action) for c in plan.changes}
        assert p.plan().summary() == {"unchanged": 2}


def test_positions_round_trip_and_ids_ignore_the_session_time_zone() -> None:
    values = [
        datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5),
        date(2026, 1, 2),
        Decimal("10.50"),
        UUID(int=7),
        42,
        "a",
    ]
    for value in values:
        assert decode_value(encode_value(value)) == value
        assert type(decode_value(encode_value(value))) is type(value)
    utc = datetime(2026, 1, 2, 12, tzinfo=UTC)
    paris = utc.astimezone(timezone(timedelta(hours=1)))
    assert event_id("orders", [1], utc) == event_id("orders", [1], paris)
    assert event_id("orders", [1], utc) != event_id("orders", [2], utc)
    assert event_id("orders", [1], utc) != event_id("refunds", [1], utc)
    with pytest.raises(SourceError, match="cannot keep a position"):
        encode_value(b"bytes")


def test_an_unknown_database_scheme_names_the_known_ones() -> None:
    with pytest.raises(SourceError, match="known schemes: postgresql://"):
        open_reader("mysql://app:secret@db/shop", Path("."))
