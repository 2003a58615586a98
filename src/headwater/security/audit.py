"""The audit stream: one record per write through the server (an ingest batch, feedback, a
promotion, an alert acknowledged, a key created or revoked) in the log's ``_audit`` stream.

A record says when, which key of which team, which route, how many events and the result —
never a secret and never a payload. It is appended durably before the answer goes out.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from headwater.log.base import AUDIT_STREAM, Log, NewRecord

ANONYMOUS = "-"  # the key id of a write made without a key (auth off, or a local command)


@dataclass(frozen=True)
class AuditRecord:
    at_us: int
    key_id: str
    team: str
    action: str  # "ingest", "promote", "alert.ack", "key.create", "key.revoke", ...
    target: str  # the stream, model:alias, alert id or key id acted on
    result: str  # "ok", or the HTTP status and reason of a refusal
    counts: dict[str, int] = field(default_factory=dict)
    detail: str = ""


class AuditLog:
    """Appends audit records to the log and reads them back."""

    def __init__(self, log: Log, clock: Callable[[], int]) -> None:
        self._log, self._clock = log, clock

    def record(
        self,
        key_id: str,
        team: str,
        action: str,
        target: str,
        result: str = "ok",
        counts: dict[str, int] | None = None,
        detail: str = "",
    ) -> AuditRecord:
        now = self._clock()
        entry = AuditRecord(now, key_id, team, action, target, result, counts or {}, detail)
        payload = orjson.dumps(asdict(entry))
        self._log.append(
            AUDIT_STREAM, [NewRecord(str(uuid.uuid4()), now, payload, fresh_id=True)], now
        )
        return entry

    def read(
        self, since_us: int | None = None, team: str | None = None, batch: int = 10_000
    ) -> Iterator[AuditRecord]:
        """Every record (oldest first), those at or after ``since_us`` of ``team`` if given."""
        if AUDIT_STREAM not in self._log.streams():
            return
        offset = 0
        while True:
            records = self._log.read(AUDIT_STREAM, offset, batch)
            if not records:
                return
            for r in records:
                entry = _entry(orjson.loads(r.payload))
                if (since_us is None or entry.at_us >= since_us) and (
                    team is None or entry.team == team
                ):
                    yield entry
            offset = records[-1].offset + 1


def _entry(doc: dict[str, Any]) -> AuditRecord:
    return AuditRecord(**doc)
