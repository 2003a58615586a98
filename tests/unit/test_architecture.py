"""The import rules of STYLE.md, checked on the source so they hold without discipline."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "headwater"
ADAPTERS = {
    "log/embedded.py",
    "log/kafka.py",
    "stores/online_sqlite.py",
    "stores/offline_parquet.py",
    "stores/metadata_sqlite.py",
    "stores/metadata_postgres.py",
    "stores/online_redis.py",
    "stores/sqlite_file.py",
    "sources/postgres.py",
}
# Third-party clients of a backend: each may be imported by exactly one adapter module.
CLIENTS = {"redis", "psycopg", "confluent_kafka", "pyspark", "sqlite3", "mlflow"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules() -> dict[str, set[str]]:
    return {str(p.relative_to(SRC)): _imports(p) for p in SRC.rglob("*.py")}


def test_definitions_import_nothing_else_of_headwater():
    for name, imports in _modules().items():
        if name.startswith("definitions/"):
            ours = {i for i in imports if i.startswith("headwater")}
            assert all(i.startswith("headwater.definitions") for i in ours), (name, ours)


def test_the_core_never_imports_an_adapter():
    adapter_modules = {"headwater." + a[:-3].replace("/", ".") for a in ADAPTERS}
    for name, imports in _modules().items():
        if name in ADAPTERS or name == "backends.py":
            continue
        assert not imports & adapter_modules, (
            f"{name} imports an adapter: {imports & adapter_modules}"
        )


def test_each_backend_client_is_imported_by_one_adapter_only():
    users: dict[str, list[str]] = {}
    for name, imports in _modules().items():
        for client in CLIENTS:
            if any(i == client or i.startswith(client + ".") for i in imports):
                users.setdefault(client, []).append(name)
    for client, modules in users.items():
        if client in ("sqlite3", "psycopg"):
            # one adapter per port: SQLite files of the embedded configuration; PostgreSQL for
            # the metadata store and for table sources
            assert set(modules) <= ADAPTERS, modules
        else:
            assert len(modules) == 1, (client, modules)
