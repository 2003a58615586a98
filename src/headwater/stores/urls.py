"""The one registry of backends: a store URL's scheme picks its adapter, imported lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from headwater.definitions.source import redact_url
from headwater.errors import HeadwaterError


class BackendError(HeadwaterError):
    """A store URL names no known backend, or its backend is not installed."""


def local_path(url: str, root: Path) -> Path:
    """``sqlite:///rel/path`` and ``file://rel/path`` are relative to the project folder;
    ``sqlite:////abs/path`` and ``file:///abs/path`` are absolute."""
    rest = url.split("://", 1)[1]
    if url.startswith("sqlite://"):
        rest = rest[1:] if rest.startswith("/") else rest
    path = Path(rest)
    return path if path.is_absolute() else root / path


def _sqlite_log(url: str, root: Path) -> Any:
    from headwater.log.embedded import EmbeddedLog

    return EmbeddedLog(local_path(url, root))


def _kafka_log(url: str, root: Path) -> Any:
    from headwater.log.kafka import KafkaLog, KafkaSettings

    return KafkaLog(KafkaSettings.from_url(url))


def _sqlite_online(url: str, root: Path) -> Any:
    from headwater.stores.online.sqlite import SqliteOnlineStore

    return SqliteOnlineStore(local_path(url, root))


def _redis_online(url: str, root: Path) -> Any:
    from headwater.stores.online.redis import RedisOnlineStore

    return RedisOnlineStore(url)


def _parquet_offline(url: str, root: Path) -> Any:
    from headwater.stores.offline.parquet import ParquetOfflineStore

    return ParquetOfflineStore(local_path(url, root))


# fsspec URLs of the offline store, and the package that implements each scheme
FSSPEC_OFFLINE = {
    "memory": "fsspec",
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
}


def _fsspec_offline(url: str, root: Path) -> Any:
    """History at a URL fsspec understands; credentials come from the environment as each
    filesystem reads them (e.g. AWS_* variables for s3://)."""
    from headwater.stores.offline.parquet import ParquetOfflineStore

    try:
        return ParquetOfflineStore(url)
    except ImportError as exc:
        package = FSSPEC_OFFLINE.get(urlparse(url).scheme, "fsspec")
        raise BackendError(
            f"the offline store {url!r} needs {package}: pip install {package} ({exc})"
        ) from None


def _sqlite_metadata(url: str, root: Path) -> Any:
    from headwater.stores.metadata.sqlite import SqliteMetadataStore

    return SqliteMetadataStore(local_path(url, root))


def _postgres_metadata(url: str, root: Path) -> Any:
    from headwater.stores.metadata.postgres import PostgresMetadataStore

    return PostgresMetadataStore(url)


def _postgres_table(url: str, root: Path) -> Any:
    from headwater.sources.postgres import PostgresTableReader

    return PostgresTableReader(url)


BACKENDS: dict[str, dict[str, Any]] = {
    "log": {"sqlite": _sqlite_log, "kafka": _kafka_log},
    "online": {"sqlite": _sqlite_online, "redis": _redis_online},
    "offline": {"file": _parquet_offline, **dict.fromkeys(FSSPEC_OFFLINE, _fsspec_offline)},
    "metadata": {
        "sqlite": _sqlite_metadata,
        "postgresql": _postgres_metadata,
        "postgres": _postgres_metadata,
    },
    "table": {"postgresql": _postgres_table, "postgres": _postgres_table},  # table sources
}


def open_backend(port: str, url: str, root: Path) -> Any:
    scheme = urlparse(url).scheme
    factory = BACKENDS[port].get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in BACKENDS[port])
        shown = redact_url(url)
        raise BackendError(f"no {port} backend for {shown!r}; known schemes: {known}")
    return factory(url, root)
