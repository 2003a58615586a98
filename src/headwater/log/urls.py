"""Opening the log named by a URL: ``sqlite:///...`` (embedded) or ``kafka://host:port``."""

from __future__ import annotations

from pathlib import Path

from headwater.log.base import Log
from headwater.stores.urls import Factory, local_path, open_url


def _sqlite_log(url: str, root: Path) -> Log:
    from headwater.log.embedded import EmbeddedLog

    return EmbeddedLog(local_path(url, root))


def _kafka_log(url: str, root: Path) -> Log:
    from headwater.log.kafka import KafkaLog, KafkaSettings

    return KafkaLog(KafkaSettings.from_url(url))


LOGS: dict[str, Factory[Log]] = {"sqlite": _sqlite_log, "kafka": _kafka_log}


def open_log(url: str, root: Path) -> Log:
    """The log at ``url``; a relative ``sqlite:///`` path is under ``root``."""
    return open_url("log", LOGS, url, root)
