"""The shape of the house, checked on the source: imports point one way and packages form no cycle.

`api/` is FastAPI glue: only `app.py`, `cli.py` and `api/` itself may import it. Between the
packages of `fhir_gateway` (and the top-level modules) the imports form no cycle, so every layer
can be read, tested and changed without the ones above it.
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "fhir_gateway"
MAY_IMPORT_API = {"app", "cli", "api"}


def _unit(path: Path) -> str:
    """The package (or top-level module) a source file belongs to."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imported_units(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "fhir_gateway":
                names = [f"fhir_gateway.{a.name}" for a in node.names if a.name != "__version__"]
            else:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found.update(n.split(".")[1] for n in names if n.startswith("fhir_gateway."))
    return found


def _graph() -> dict[str, dict[str, set[str]]]:
    """unit → imported unit → the files that import it."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        source = _unit(path)
        for target in _imported_units(path) - {source}:
            graph[source][target].add(str(path.relative_to(PACKAGE)))
    return graph


def test_only_the_http_layer_imports_api() -> None:
    offenders = {
        f"{source} <- {sorted(files)}"
        for source, targets in _graph().items()
        for target, files in targets.items()
        if target == "api" and source not in MAY_IMPORT_API
    }
    assert not offenders, offenders


def test_packages_form_no_cycle() -> None:
    graph = _graph()
    visiting: list[str] = []
    done: set[str] = set()
    cycles: list[str] = []

    def visit(unit: str) -> None:
        if unit in done:
            return
        if unit in visiting:
            loop = [*visiting[visiting.index(unit) :], unit]
            cycles.append(
                " -> ".join(loop)
                + "  ("
                + "; ".join(f"{a}->{b}: {sorted(graph[a][b])[0]}" for a, b in itertools.pairwise(loop))
                + ")"
            )
            return
        visiting.append(unit)
        for target in sorted(graph.get(unit, {})):
            visit(target)
        visiting.pop()
        done.add(unit)

    for unit in sorted(graph):
        visit(unit)
    assert not cycles, "\n".join(cycles)
