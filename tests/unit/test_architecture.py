"""The layer table of docs/concepts.md and import rules, checked on the source so they hold without
discipline: every import counts, at module level, inside functions and under TYPE_CHECKING.

1. A package imports only from layers below its own; between two packages of one layer, only
   in the direction ``PEERS`` names (so the order is strict there too).
2. No cycle between modules, and none between packages.
3. A third-party client is imported only in the places DESIGN names for it.

Each rule is also run on a planted violation, to show that it fails.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "headwater"

# docs/concepts.md, "Layers": a package's layer. Top-level modules count as packages of one module.
LAYERS = {
    "errors": 0,
    "definitions": 0,
    "features": 1,
    "privacy": 1,
    "log": 2,
    "stores": 2,
    "ingestion": 3,
    "streaming": 3,
    "history": 3,
    "sources": 3,
    "security": 3,
    "training": 4,
    "registry": 4,
    "serving": 5,
    "monitoring": 5,
    "environments": 6,
    "ui": 6,
    "project": 7,
    "cli": 8,
    "quickstart": 8,
    "client": 8,  # headwater.Client: a remote server with Project's return types
    # beyond the table: the package's public names and entry point
    "__init__": 9,
    "__main__": 9,
    # the sample project: its simulator (the quickstart's data) imports nothing of ours; its
    # definitions are user code, checked apart (they import the public API only)
    "examples": 8,
}
USER_CODE = {"headwater.examples.shop.definitions"}
# Within a layer, who may import whom (importer -> imported); nothing else between peers.
PEERS = {
    ("definitions", "errors"),  # a definition's error is a HeadwaterError
    ("log", "stores"),  # the embedded log opens its SQLite file as the stores do; one URL parser
    ("sources", "ingestion"),  # sources feed streams through the validated ingest path
    ("training", "registry"),  # the trainer registers the version it trained
    ("cli", "quickstart"),  # `headwater quickstart` runs it
    ("quickstart", "examples"),  # on the shop example's simulated events
    ("quickstart", "client"),  # `quickstart --auth` writes through its server with team keys
}

# Third-party clients and the modules (or folders, ending in "/") that may import them.
CLIENTS = {
    "redis": {"stores/online/redis.py"},
    "psycopg": {"stores/metadata/postgres.py", "stores/monitor/postgres.py", "sources/postgres.py"},
    "confluent_kafka": {"log/kafka.py"},
    "pyspark": {"history/engines/"},
    "duckdb": {"history/engines/", "stores/monitor/"},
    "fsspec": {"stores/", "log/"},
    "sqlite3": {"stores/sqlite_file.py", "stores/online/sqlite.py", "log/embedded.py"},
    "mlflow": {"registry/mlflow_mirror.py"},
    "fastapi": {"serving/http/", "ui/"},
    "starlette": {"serving/http/", "ui/"},
    "uvicorn": {"serving/http/"},
    "prometheus_client": {"serving/http/"},
    "grpc": {"serving/grpc/"},
    "faker": {"privacy/mock.py"},
    "cryptography": {"privacy/policies.py"},
}
# Where a client is still imported outside its places, and the issue that moves it there.
# This list only shrinks: a module that no longer imports the client must leave it.
PENDING: set[tuple[str, str]] = set()  # none left: issue 16 moved the last ones


def module_name(path: Path, src: Path) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return "headwater." + ".".join(parts) if parts != ("__init__",) else "headwater"


def imports_of(path: Path, src: Path, known: set[str]) -> set[str]:
    """Every module ``path`` imports, wherever the import statement is: headwater modules by
    their full name (``from pkg import mod`` counts as ``pkg.mod``), others by their root."""
    here = module_name(path, src)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            subs = {f"{base}.{alias.name}" for alias in node.names} & known
            found |= subs or {base}
    return {n if n.startswith("headwater") else n.split(".")[0] for n in found}


def graph(src: Path, user_code: bool = False) -> dict[str, set[str]]:
    """Module -> the modules it imports (headwater's and third-party roots); the example's
    user code only if ``user_code``."""
    paths = {module_name(p, src): p for p in src.rglob("*.py")}
    paths = {n: p for n, p in paths.items() if user_code or n not in USER_CODE}
    known = set(paths)
    return {name: imports_of(path, src, known) for name, path in paths.items()}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def place_of(module: str, src: Path) -> str:
    """A module's file as DESIGN names it: ``stores/online/redis.py``."""
    rel = module.removeprefix("headwater").lstrip(".").replace(".", "/")
    return rel + ("/__init__.py" if (src / rel).is_dir() else ".py")


def layer_violations(edges: Mapping[str, set[str]]) -> list[str]:
    found = []
    for module, imported in edges.items():
        mine = package_of(module)
        for target in imported:
            if not target.startswith("headwater"):
                continue
            theirs = package_of(target)
            if theirs == mine:
                continue
            if theirs not in LAYERS or mine not in LAYERS:
                found.append(f"{module} -> {target}: a package missing from DESIGN's table")
            elif LAYERS[theirs] > LAYERS[mine] or (
                LAYERS[theirs] == LAYERS[mine] and (mine, theirs) not in PEERS
            ):
                found.append(
                    f"{module} (layer {LAYERS[mine]}) imports {target} (layer {LAYERS[theirs]})"
                )
    return sorted(found)


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), and self-loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def package_edges(edges: Mapping[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, imported in edges.items():
        mine = package_of(module)
        out.setdefault(mine, set())
        out[mine] |= {
            package_of(t) for t in imported if t.startswith("headwater") and package_of(t) != mine
        }
    return out


def client_violations(edges: Mapping[str, set[str]], src: Path) -> list[str]:
    found = []
    for module, imported in edges.items():
        place = place_of(module, src)
        for client, places in CLIENTS.items():
            if client not in imported or (client, place) in PENDING:
                continue
            if not any(place == p or (p.endswith("/") and place.startswith(p)) for p in places):
                found.append(f"{place} imports {client} (allowed in {sorted(places)})")
    return sorted(found)


# -- the rules on headwater's source ------------------------------------------------------


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return graph(SRC)


def test_every_package_is_in_the_layer_table(edges):
    assert {package_of(m) for m in edges} <= set(LAYERS)


def test_packages_import_only_from_lower_layers(edges):
    assert layer_violations(edges) == []


def test_no_cycle_between_modules(edges):
    ours = {m: {t for t in ts if t.startswith("headwater")} for m, ts in edges.items()}
    assert cycles(ours) == []


def test_no_cycle_between_packages(edges):
    assert cycles(package_edges(edges)) == []


def test_clients_are_imported_only_where_design_says(edges):
    assert client_violations(edges, SRC) == []


def test_the_pending_list_only_shrinks(edges):
    still = {(c, place_of(m, SRC)) for m, ts in edges.items() for c in CLIENTS if c in ts}
    assert still >= PENDING, f"no longer pending, remove from PENDING: {PENDING - still}"


def test_the_example_definitions_import_only_the_public_api():
    for module in USER_CODE:
        ours = {t for t in graph(SRC, user_code=True)[module] if t.startswith("headwater")}
        assert ours == {"headwater"}, ours


def test_definitions_import_nothing_else_of_headwater(edges):
    for module, imported in edges.items():
        if package_of(module) == "definitions":
            ours = {package_of(t) for t in imported if t.startswith("headwater")}
            assert ours <= {"definitions", "errors"}, (module, ours)


# -- the rules fail on planted violations --------------------------------------------------


def plant(tmp_path: Path, files: Mapping[str, str]) -> Path:
    src = tmp_path / "headwater"
    for name, text in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.parents:
            if parent == src.parent:
                break
            (parent / "__init__.py").touch()
        path.write_text(text)
    return src


def test_an_import_from_a_higher_layer_fails(tmp_path):
    src = plant(
        tmp_path,
        {
            "stores/online/base.py": "def f():\n    from headwater.serving import runtime\n",
            "serving/runtime.py": "",
        },
    )
    assert layer_violations(graph(src)) == [
        "headwater.stores.online.base (layer 2) imports headwater.serving.runtime (layer 5)"
    ]


def test_an_import_between_peers_not_listed_fails(tmp_path):
    src = plant(tmp_path, {"registry/x.py": "import headwater.training.y\n", "training/y.py": ""})
    assert layer_violations(graph(src)) == [
        "headwater.registry.x (layer 4) imports headwater.training.y (layer 4)"
    ]


def test_a_cycle_under_type_checking_fails(tmp_path):
    src = plant(
        tmp_path,
        {
            "history/a.py": "from headwater.history.b import B\n",
            "history/b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from headwater.history import a\n"
            ),
        },
    )
    ours = {m: {t for t in ts if t.startswith("headwater")} for m, ts in graph(src).items()}
    assert cycles(ours) == [["headwater.history.a", "headwater.history.b"]]


def test_a_cycle_between_packages_fails(tmp_path):
    src = plant(
        tmp_path,
        {
            "serving/a.py": "from headwater.monitoring import b\n",
            "monitoring/b.py": "",
            "monitoring/c.py": "def f():\n    import headwater.serving.d\n",
            "serving/d.py": "",
        },
    )
    edges = graph(src)
    assert cycles({m: {t for t in ts if "headwater" in t} for m, ts in edges.items()}) == []
    assert cycles(package_edges(edges)) == [["monitoring", "serving"]]


def test_a_client_outside_its_place_fails(tmp_path):
    src = plant(
        tmp_path,
        {
            "streaming/online.py": "def f():\n    import redis.asyncio\n",
            "stores/online/redis.py": "import redis\n",
            "training/fit.py": "from fastapi import FastAPI\n",
        },
    )
    assert client_violations(graph(src), src) == [
        "streaming/online.py imports redis (allowed in ['stores/online/redis.py'])",
        "training/fit.py imports fastapi (allowed in ['serving/http/', 'ui/'])",
    ]
