"""Alerts as the monitor raised them (the ``alerts`` stream of the log) and who acknowledged
them (the metadata store): ``headwater alerts``, ``POST /v1/alerts/{id}/ack``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from headwater.errors import NotFoundError
from headwater.log.base import ALERTS_STREAM, Log
from headwater.stores.metadata.base import MetadataStore

ALERTS = ALERTS_STREAM  # the stream the monitor (and the processor's data tests) append to
ACKS = "alert_acks"  # the metadata collection


class UnknownAlert(NotFoundError):
    """No alert has this id."""


@dataclass(frozen=True)
class Alert:
    id: str
    at_us: int
    body: dict[str, Any]
    ack: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at_us": self.at_us, **self.body, "ack": self.ack}


class Alerts:
    """Reads raised alerts and records acknowledgements."""

    def __init__(self, log: Log, metadata: MetadataStore, clock: Callable[[], int]) -> None:
        self._log, self._metadata, self._clock = log, metadata, clock

    def list(self, open_only: bool = False) -> list[Alert]:
        """Every alert (oldest first), with its acknowledgement; only unacknowledged ones
        with ``open_only``."""
        acks = self._metadata.get_records(ACKS)
        found: dict[str, Alert] = {}
        for record in self._records():
            found.setdefault(
                record.event_id,
                Alert(
                    record.event_id,
                    record.event_time,
                    orjson.loads(record.payload),
                    acks.get(record.event_id),
                ),
            )
        alerts = list(found.values())
        return [a for a in alerts if a.ack is None] if open_only else alerts

    def ack(self, alert_id: str, by: str, team: str, reason: str = "") -> Alert:
        """Acknowledge an alert (again: the latest acknowledgement is kept)."""
        alert = next((a for a in self.list() if a.id == alert_id), None)
        if alert is None:
            raise UnknownAlert(
                f"no alert has the id {alert_id!r}; `headwater alerts list` shows them"
            )
        ack = {"by": by, "team": team, "reason": reason, "at_us": self._clock()}
        self._metadata.put_records([(ACKS, alert_id, ack)])
        return Alert(alert.id, alert.at_us, alert.body, ack)

    def _records(self):  # type: ignore[no-untyped-def]
        if ALERTS not in self._log.streams():
            return
        for partition in range(self._log.partitions(ALERTS)):
            offset = 0
            while batch := self._log.read(ALERTS, offset, 5000, partition):
                yield from batch
                offset = batch[-1].offset + 1
