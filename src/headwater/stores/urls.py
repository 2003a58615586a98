"""The one registry of stores: a store URL's scheme picks its adapter, imported lazily, and
each ``open_*`` returns its port's type."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlparse

from headwater.definitions.source import redact_url
from headwater.errors import HeadwaterError
from headwater.stores.params import split_param, with_param

if TYPE_CHECKING:
    from headwater.stores.artifacts.base import ArtifactStore
    from headwater.stores.metadata.base import MetadataStore
    from headwater.stores.monitor.base import MonitorStore
    from headwater.stores.offline.base import OfflineStore
    from headwater.stores.online.base import OnlineStore

T = TypeVar("T")
Factory = Callable[[str, Path], T]


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


# The defaults that a namespace extends, per store URL scheme and port.
_PG_SCHEMAS = {"metadata": "headwater", "monitor": "headwater_monitor"}
_REDIS_NAMESPACE = "hw"


def namespaced(port: str, url: str, namespace: str) -> str:
    """``url`` moved into ``namespace``, so that stores of several environments or projects
    can share one server, bucket or folder without seeing each other's data: a Kafka log's
    topics and consumer groups get the prefix ``NAMESPACE.``, Redis keys ``hw:NAMESPACE:``,
    PostgreSQL tables the schema ``headwater_NAMESPACE`` (or ``SCHEMA_NAMESPACE`` when the URL
    names one), a SQLite or DuckDB file a folder ``NAMESPACE`` beside it, and a folder of
    files (``file://``, ``s3://``...) the subfolder ``NAMESPACE``. An empty namespace leaves the
    URL as it is.

    >>> namespaced("log", "kafka://k:9092?partitions=4", "shop_staging")
    'kafka://k:9092?partitions=4&prefix=shop_staging.'
    >>> namespaced("online", "sqlite:///.headwater/online.db", "shop_staging")
    'sqlite:///.headwater/shop_staging/online.db'
    >>> namespaced("offline", "s3://bucket/hw/", "shop_staging")
    's3://bucket/hw/shop_staging'
    >>> namespaced("metadata", "postgresql://u@db/prod", "shop_staging")
    'postgresql://u@db/prod?schema=headwater_shop_staging'
    """
    if not namespace:
        return url
    scheme = urlparse(url).scheme
    if scheme == "kafka":
        _, prefix = split_param(url, "prefix")
        return with_param(url, "prefix", f"{prefix or ''}{namespace}.")
    if scheme in ("redis", "rediss", "unix"):
        _, current = split_param(url, "namespace")
        return with_param(url, "namespace", f"{current or _REDIS_NAMESPACE}:{namespace}")
    if scheme in ("postgresql", "postgres"):
        _, schema = split_param(url, "schema")
        return with_param(url, "schema", f"{schema or _PG_SCHEMAS[port]}_{namespace}")
    base, sep, query = url.partition("?")
    if scheme in ("sqlite", "duckdb"):
        folder, slash, name = base.rpartition("/")
        return f"{folder}{slash}{namespace}/{name}{sep}{query}"
    return f"{base.rstrip('/')}/{namespace}{sep}{query}"


def open_url(kind: str, factories: Mapping[str, Factory[T]], url: str, root: Path) -> T:
    """The adapter ``factories`` holds for ``url``'s scheme; a clear error (the URL's password
    redacted) listing the known schemes otherwise."""
    factory = factories.get(urlparse(url).scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in factories)
        raise BackendError(f"no {kind} backend for {redact_url(url)!r}; known schemes: {known}")
    return factory(url, root)


def _sqlite_online(url: str, root: Path) -> OnlineStore:
    from headwater.stores.online.sqlite import SqliteOnlineStore

    return SqliteOnlineStore(local_path(url, root))


def _redis_online(url: str, root: Path) -> OnlineStore:
    from headwater.stores.online.redis import RedisOnlineStore

    base, namespace = split_param(url, "namespace")
    return RedisOnlineStore(base, namespace or _REDIS_NAMESPACE)


def _parquet_offline(url: str, root: Path) -> OfflineStore:
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


def _fsspec_offline(url: str, root: Path) -> OfflineStore:
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


def _sqlite_metadata(url: str, root: Path) -> MetadataStore:
    from headwater.stores.metadata.sqlite import SqliteMetadataStore

    return SqliteMetadataStore(local_path(url, root))


def _postgres_metadata(url: str, root: Path) -> MetadataStore:
    from headwater.stores.metadata.postgres import PostgresMetadataStore

    return PostgresMetadataStore(url)


def _file_artifacts(url: str, root: Path) -> ArtifactStore:
    from headwater.stores.artifacts.files import FileArtifactStore

    return FileArtifactStore(local_path(url, root))


def _fsspec_artifacts(url: str, root: Path) -> ArtifactStore:
    """Model files at a URL fsspec understands; credentials come from the environment."""
    from headwater.stores.artifacts.files import FileArtifactStore

    return FileArtifactStore(url)


def _duckdb_monitor(url: str, root: Path) -> MonitorStore:
    from headwater.stores.monitor.duckdb import DuckDBMonitorStore

    return DuckDBMonitorStore(local_path(url, root))


def _postgres_monitor(url: str, root: Path) -> MonitorStore:
    from headwater.stores.monitor.postgres import PostgresMonitorStore

    return PostgresMonitorStore(url)


ONLINE: dict[str, Factory[OnlineStore]] = {"sqlite": _sqlite_online, "redis": _redis_online}
OFFLINE: dict[str, Factory[OfflineStore]] = {
    "file": _parquet_offline,
    **dict.fromkeys(FSSPEC_OFFLINE, _fsspec_offline),
}
METADATA: dict[str, Factory[MetadataStore]] = {
    "sqlite": _sqlite_metadata,
    "postgresql": _postgres_metadata,
    "postgres": _postgres_metadata,
}


ARTIFACTS: dict[str, Factory[ArtifactStore]] = {
    "file": _file_artifacts,
    **dict.fromkeys(FSSPEC_OFFLINE, _fsspec_artifacts),
}


MONITOR: dict[str, Factory[MonitorStore]] = {
    "duckdb": _duckdb_monitor,
    "postgresql": _postgres_monitor,
    "postgres": _postgres_monitor,
}


def open_online(url: str, root: Path) -> OnlineStore:
    """The online store at ``url`` (``sqlite:///...`` relative to ``root``, ``redis://...``)."""
    return open_url("online", ONLINE, url, root)


def open_offline(url: str, root: Path) -> OfflineStore:
    """The offline store at ``url`` (``file://...`` relative to ``root``, or an fsspec URL)."""
    return open_url("offline", OFFLINE, url, root)


def open_metadata(url: str, root: Path) -> MetadataStore:
    """The metadata store at ``url`` (``sqlite:///...``, ``postgresql://...``)."""
    return open_url("metadata", METADATA, url, root)


def open_artifacts(url: str, root: Path) -> ArtifactStore:
    """The artifacts store at ``url`` (``file://...`` relative to ``root``, or an fsspec URL);
    an unreachable one fails here, with the URL (password redacted) and what to check."""
    return open_url("artifacts", ARTIFACTS, url, root)


def open_monitor(url: str, root: Path) -> MonitorStore:
    """The monitor state at ``url`` (``duckdb://...`` relative to ``root``, or
    ``postgresql://...?schema=...``); an unreachable one fails here, naming the URL."""
    return open_url("monitor", MONITOR, url, root)


def open_backend(port: str, url: str, root: Path) -> object:
    """The store of ``port`` ("online", "offline", "metadata", "artifacts",
    "monitor") at ``url``."""
    opener = {
        "online": open_online,
        "offline": open_offline,
        "metadata": open_metadata,
        "artifacts": open_artifacts,
        "monitor": open_monitor,
    }[port]
    return opener(url, root)
