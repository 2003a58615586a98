"""``headwater.toml``: typed, frozen settings; each adapter gets only its own part."""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headwater.definitions.windows import parse_duration
from headwater.errors import HeadwaterError
from headwater.history.engines.spark import SparkSettings
from headwater.privacy.policies import create_secret_file
from headwater.stores.urls import namespaced

CONFIG_FILE = "headwater.toml"
DEFAULT_STORES = {
    "log": "sqlite:///.headwater/log.db",
    "online": "sqlite:///.headwater/online.db",
    "offline": "file://.headwater/offline",
    "metadata": "sqlite:///.headwater/metadata.db",
    "artifacts": "file://.headwater/artifacts",
    "monitor": "duckdb://.headwater/monitor.duckdb",
}


class ConfigError(HeadwaterError):
    """headwater.toml is missing or invalid."""


@dataclass(frozen=True)
class StoreUrls:
    log: str
    online: str
    offline: str
    metadata: str
    artifacts: str = DEFAULT_STORES["artifacts"]
    monitor: str = DEFAULT_STORES["monitor"]


@dataclass(frozen=True)
class IngestSettings:
    max_request_bytes: int = 16 * 1024 * 1024
    max_events_per_request: int = 100_000
    max_future_us: int = 5 * 60 * 1_000_000


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServerSettings:
    """``[server]``: where to listen and who may call. ``auth = "keys"`` requires an API key
    with the right scope on every route but the public ones; ``allowed_hosts`` are the names
    the ``Host`` header may carry (DNS rebinding defence); ``allowed_origins`` the web origins
    allowed to call besides the server's own (CORS answers only for them); ``rate_limit``
    requests per second per key (0: none); ``max_entities`` per predict or features call."""

    host: str = "127.0.0.1"
    port: int = 8800
    auth: str = "none"
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    allowed_origins: tuple[str, ...] = ()
    metrics_public: bool = False
    rate_limit: float = 0.0
    rate_burst: float = 0.0  # 0: twice the rate
    max_entities: int = 1000
    tls_cert: str | None = None
    tls_key: str | None = None


@dataclass(frozen=True)
class TrackingSettings:
    mlflow_uri: str | None = None  # mirror every registered version to this MLflow server


@dataclass(frozen=True)
class OfflineSettings:
    """``[offline]``: the engine of training sets, ``"duckdb"`` (embedded) or ``"spark"``, and
    where Spark runs (``[offline.spark]``: ``master``, and ``conf``, a table of Spark settings);
    ``sorted_history``: keep each stream's history sorted by key too, for ``last`` features."""

    engine: str = "duckdb"
    spark: SparkSettings = SparkSettings()
    sorted_history: bool = True


@dataclass(frozen=True)
class MonitorSettings:
    min_sample: int = 100  # fewer rows in a window: drift is measured, never alerted


ENV_VARIABLE = "HEADWATER_ENV"
DEFAULT_ENVIRONMENT = "default"  # a project that declares no environments has this one
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
_NAMESPACE = re.compile(r"([a-z][a-z0-9_]{0,59})?")
# What an environment's table may set; its stores and server override the shared ones.
_ENVIRONMENT_KEYS = {"namespace", "stores", "server", "pii", "tracking"}


@dataclass(frozen=True)
class Environment:
    """The environment a project was opened in: its name, and the namespace its shared stores
    are moved into (``""``: the stores as ``[stores]`` names them). ``declared``: the project
    declares environments (otherwise this is the implicit ``default``)."""

    name: str = DEFAULT_ENVIRONMENT
    namespace: str = ""
    declared: bool = False

    @property
    def own(self) -> str | None:
        """The name of a declared environment; None for the implicit default (what the PII
        secret's own variable and the refusals name)."""
        return self.name if self.declared else None


@dataclass(frozen=True)
class Settings:
    root: Path
    name: str
    definitions: tuple[str, ...]
    stores: StoreUrls
    ingest: IngestSettings
    server: ServerSettings
    tracking: TrackingSettings = TrackingSettings()
    offline: OfflineSettings = OfflineSettings()
    monitor: MonitorSettings = MonitorSettings()
    # The PII secret's file (mode 600); never the secret itself, which is not configuration.
    pii_secret_file: Path | None = None
    environment: Environment = Environment()
    environments: tuple[str, ...] = ()  # the environments the project declares


def _table(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] in {CONFIG_FILE} must be a table")
    return value


def load_settings(
    root: str | Path, env: str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read ``headwater.toml`` in a project folder, for the environment ``env`` (by default
    ``$HEADWATER_ENV``, else ``[project] default_environment``, else the only one declared)."""
    root = Path(root).resolve()
    path = root / CONFIG_FILE
    if not path.is_file():
        below = sorted(p.parent.name for p in root.glob(f"*/{CONFIG_FILE}"))
        hint = (
            f"pass the project folder with --project, e.g. -p {below[0]}"
            if below
            else "pass the project folder with --project, or create one with "
            "`headwater init FOLDER`"
        )
        raise ConfigError(f"no {CONFIG_FILE} in {root}; {hint}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    project = _table(data, "project")
    name = str(project.get("name", root.name))
    declared = _table(data, "environments")
    environ = os.environ if environ is None else environ
    chosen = _choose_environment(path, project, declared, env or environ.get(ENV_VARIABLE))
    environment = Environment()
    own: dict[str, Any] = {}
    if chosen is not None:
        own = _environment_table(declared, chosen)
        environment = Environment(chosen, _namespace(name, chosen, own), True)
    stores = _stores(path, data, declared, name)[environment.name]
    ingest = _table(data, "ingest")
    server = {**_table(data, "server"), **_table(own, "server")}
    tracking = {**_table(data, "tracking"), **_table(own, "tracking")}
    pii = _table(own, "pii") if "pii" in own else _table(data, "pii")
    try:
        return Settings(
            root=root,
            name=name,
            definitions=tuple(project.get("definitions", ["definitions.py"])),
            stores=stores,
            ingest=IngestSettings(
                max_request_bytes=int(ingest.get("max_request_bytes", 16 * 1024 * 1024)),
                max_events_per_request=int(ingest.get("max_events_per_request", 100_000)),
                max_future_us=parse_duration(ingest.get("max_future", "5m")),
            ),
            server=_server_settings(server),
            tracking=TrackingSettings(mlflow_uri=tracking.get("mlflow_uri")),
            offline=_offline_settings(_table(data, "offline")),
            monitor=_monitor_settings(_table(data, "monitor")),
            pii_secret_file=_pii_secret_file(root, pii),
            environment=environment,
            environments=tuple(declared),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid setting in {path}: {exc}") from None


def declared_environments(root: str | Path) -> tuple[str, ...]:
    """The environments a project's ``headwater.toml`` declares, in order (none: ``()``)."""
    path = Path(root).resolve() / CONFIG_FILE
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        load_settings(root)  # raises the error naming what to do
        raise
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return tuple(_table(data, "environments"))


def _choose_environment(
    path: Path, project: dict[str, Any], declared: dict[str, Any], env: str | None
) -> str | None:
    """The declared environment to open (None: the project declares none)."""
    names = ", ".join(declared) or "none"
    if not declared:
        if env not in (None, "", DEFAULT_ENVIRONMENT):
            raise ConfigError(
                f"{path} declares no environments, so there is no {env!r}; declare it as "
                f"[environments.{env}] (its stores, or a namespace on the shared ones)"
            )
        if "default_environment" in project:
            raise ConfigError(f"[project] default_environment in {path}: no environments declared")
        return None
    for name in declared:
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"[environments.{name}] in {path}: an environment's name is lowercase letters, "
                "digits, '_' and '-', starting with a letter (at most 40)"
            )
    env = env or project.get("default_environment")
    if env is None:
        if len(declared) == 1:
            return next(iter(declared))
        raise ConfigError(
            f"{path} declares the environments {names}: choose one with --env NAME (or "
            f"${ENV_VARIABLE}), or name the usual one in [project] default_environment"
        )
    if env not in declared:
        raise ConfigError(f"no environment {env!r} in {path} (it declares {names})")
    return str(env)


def _environment_table(declared: dict[str, Any], name: str) -> dict[str, Any]:
    own = _table(declared, name)
    unknown = set(own) - _ENVIRONMENT_KEYS
    if unknown:
        raise ConfigError(
            f"[environments.{name}] has no setting {sorted(unknown)[0]!r} (it may set "
            f"{', '.join(sorted(_ENVIRONMENT_KEYS))})"
        )
    return own


def _namespace(project: str, env: str, own: dict[str, Any]) -> str:
    """The namespace of an environment on the shared stores: ``namespace`` as set (``""``:
    none), by default ``PROJECT_ENV`` in lowercase letters, digits and '_'."""
    value = own.get("namespace")
    if value is None:
        value = re.sub(r"[^a-z0-9_]+", "_", f"{project}_{env}".lower()).strip("_")
        return value if value[:1].isalpha() else f"hw_{value}"
    if not isinstance(value, str) or not _NAMESPACE.fullmatch(value):
        raise ConfigError(
            f"[environments.{env}] namespace must be lowercase letters, digits and '_', "
            f'starting with a letter (at most 60), or "" for none; not {value!r}'
        )
    return value


def _stores(
    path: Path, data: dict[str, Any], declared: dict[str, Any], project: str
) -> dict[str, StoreUrls]:
    """The stores of every environment: its own (``[environments.NAME.stores]``) as written,
    the shared ones (``[stores]``) in its namespace. Two environments that would share a store
    are refused, so that none ever sees another's data."""
    shared = _table(data, "stores")
    unknown = set(shared) - set(DEFAULT_STORES)
    if unknown:
        raise ConfigError(f"unknown store(s) {sorted(unknown)} in [stores] of {path}")
    if not declared:
        urls = {**DEFAULT_STORES, **shared}
        return {DEFAULT_ENVIRONMENT: StoreUrls(**{k: str(v) for k, v in urls.items()})}
    result: dict[str, StoreUrls] = {}
    owner: dict[tuple[str, str], str] = {}
    for env in declared:
        own = _environment_table(declared, env)
        mine = _table(own, "stores")
        unknown = set(mine) - set(DEFAULT_STORES)
        if unknown:
            raise ConfigError(
                f"unknown store(s) {sorted(unknown)} in [environments.{env}.stores] of {path}"
            )
        namespace = _namespace(project, env, own)
        urls = {
            port: str(mine[port])
            if port in mine
            else namespaced(port, str(shared.get(port, default)), namespace)
            for port, default in DEFAULT_STORES.items()
        }
        for port, url in urls.items():
            other = owner.setdefault((port, url), env)
            if other != env:
                raise ConfigError(
                    f"the environments {other!r} and {env!r} of {path} would share the {port} "
                    "store: give each its own stores, or a different namespace"
                )
        result[env] = StoreUrls(**urls)
    return result


def _server_settings(server: dict[str, Any]) -> ServerSettings:
    auth = str(server.get("auth", "none"))
    if auth not in ("none", "keys"):
        raise ValueError(f'[server] auth must be "none" or "keys", not {auth!r}')
    metrics_public = server.get("metrics_public", False)
    if not isinstance(metrics_public, bool):
        raise ValueError(f"[server] metrics_public must be true or false, not {metrics_public!r}")
    hosts = _strings(server, "allowed_hosts", LOOPBACK_HOSTS)
    origins = _strings(server, "allowed_origins", ())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"[server] allowed_origins: {origin!r} is not an http(s) origin")
    settings = ServerSettings(
        host=str(server.get("host", "127.0.0.1")),
        port=int(server.get("port", 8800)),
        auth=auth,
        allowed_hosts=hosts,
        allowed_origins=tuple(o.rstrip("/") for o in origins),
        metrics_public=metrics_public,
        rate_limit=float(server.get("rate_limit", 0)),
        rate_burst=float(server.get("rate_burst", 0)),
        max_entities=int(server.get("max_entities", 1000)),
        tls_cert=server.get("tls_cert"),
        tls_key=server.get("tls_key"),
    )
    if settings.rate_limit < 0 or settings.max_entities < 1:
        raise ValueError("[server] rate_limit must be >= 0 and max_entities >= 1")
    return settings


def _strings(table: dict[str, Any], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = table.get(name, list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"[server] {name} must be a list of strings")
    return tuple(value)


def _offline_settings(offline: dict[str, Any]) -> OfflineSettings:
    engine = str(offline.get("engine", "duckdb"))
    if engine not in ("duckdb", "spark"):
        raise ValueError(f'[offline] engine must be "duckdb" or "spark", not {engine!r}')
    spark = _table(offline, "spark")
    conf = _table(spark, "conf")
    sorted_history = offline.get("sorted_history", True)
    if not isinstance(sorted_history, bool):
        raise ValueError(f"[offline] sorted_history must be true or false, not {sorted_history!r}")
    return OfflineSettings(
        engine=engine,
        sorted_history=sorted_history,
        spark=SparkSettings(
            master=str(spark.get("master", "local[*]")),
            conf=tuple((str(k), _spark_value(v)) for k, v in conf.items()),
        ),
    )


def _pii_secret_file(root: Path, pii: dict[str, Any]) -> Path | None:
    if "secret" in pii:
        raise ValueError(
            "[pii] secret: the PII secret never goes in headwater.toml; put it in a file of "
            "mode 600 named by [pii] secret_file, or in $HEADWATER_PII_SECRET"
        )
    unknown = set(pii) - {"secret_file"}
    if unknown:
        raise ValueError(f"[pii] has no setting {sorted(unknown)[0]!r} (only secret_file)")
    name = pii.get("secret_file")
    if name is None:
        return None
    path = Path(str(name)).expanduser()
    return path if path.is_absolute() else root / path


def _monitor_settings(monitor: dict[str, Any]) -> MonitorSettings:
    min_sample = monitor.get("min_sample", 100)
    if isinstance(min_sample, bool) or not isinstance(min_sample, int) or min_sample < 1:
        raise ValueError(f"[monitor] min_sample must be an integer >= 1, not {min_sample!r}")
    return MonitorSettings(min_sample=min_sample)


def _spark_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


DEFAULT_PII_SECRET_FILE = ".headwater/pii.secret"


def add_pii_secret(root: Path, file: str | None = None, env: str | None = None) -> Path:
    """Create a random PII secret (mode 600) at ``file`` (relative to the project folder, or
    absolute) and name it in the project's ``headwater.toml``: ``[pii] secret_file``, or
    ``[environments.ENV.pii] secret_file`` in a project that declares environments (each its
    own secret: a pseudonym of one says nothing in another). A configured or existing secret
    is never replaced: pseudonyms made with it would no longer match. Returns the path."""
    settings = load_settings(root, env)
    environment = settings.environment
    config = settings.root / CONFIG_FILE
    data = tomllib.loads(config.read_text())
    if environment.declared:
        section = f"environments.{environment.name}.pii"
        own = _table(_table(_table(data, "environments"), environment.name), "pii")
        default = f".headwater/{environment.name}.pii.secret"
    else:
        section, own, default = "pii", _table(data, "pii"), DEFAULT_PII_SECRET_FILE
    if "secret_file" in own:
        raise ConfigError(f"[{section}] in {CONFIG_FILE} already names {own['secret_file']}")
    if own:
        raise ConfigError(f"[{section}] is in {CONFIG_FILE} already: add secret_file to it")
    path = Path(file or default).expanduser()
    target = path if path.is_absolute() else settings.root / path
    if target.exists():
        raise ConfigError(f"{target} exists; it is never replaced")
    create_secret_file(target)
    text = config.read_text()
    # A JSON string is a TOML basic string (the same quotes and escapes).
    addition = f"\n[{section}]\nsecret_file = {json.dumps(str(path))}\n"
    config.write_text(text + ("" if text.endswith("\n") else "\n") + addition)
    return target
