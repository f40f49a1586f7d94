"""Every SQL statement lives in `fhir_gateway/store/`: a reader finds "where is the outbox
claimed?" by file name, and a schema change touches one package.

Walks the package with `ast` and fails on statement or expression construction from
SQLAlchemy / SQLModel (select, insert, update, delete, text, func, exists, ...) outside the
store, on importing those names, and on `__table__` (the handle to a table's columns and its
`.insert()` / `.update()` methods). Type hints (`sa.Connection`), `sa.exc` exceptions and
`sa.engine.make_url` stay allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "fhir_gateway"
STORE = PACKAGE / "store"
SQL_MODULES = ("sqlalchemy", "sqlmodel")
BUILDERS = frozenset(
    {
        "select",
        "insert",
        "update",
        "delete",
        "text",
        "func",
        "exists",
        "case",
        "cast",
        "literal",
        "literal_column",
        "and_",
        "or_",
        "not_",
        "tuple_",
        "union",
        "union_all",
        "join",
        "outerjoin",
        "bindparam",
        "column",
        "table",
        "type_coerce",
    }
)


def _is_sql_module(name: str | None) -> bool:
    return name is not None and name.split(".")[0] in SQL_MODULES


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def violations(path: Path) -> list[str]:
    """`file:line what` for every SQL construction in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()  # local names bound to sqlalchemy / sqlmodel (sub)modules
    found: list[str] = []
    where = path.relative_to(PACKAGE.parent) if PACKAGE in path.parents else path.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_sql_module(alias.name):
                    roots.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and _is_sql_module(node.module):
            for alias in node.names:
                if alias.name in BUILDERS:
                    found.append(f"{where}:{node.lineno} imports {alias.name} from {node.module}")
                else:  # a submodule (dialects.postgresql) or a type: its attributes are checked
                    roots.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr == "__table__":
                found.append(f"{where}:{node.lineno} uses __table__")
            elif node.attr in BUILDERS and _root(node.value) in roots:
                found.append(f"{where}:{node.lineno} builds SQL with .{node.attr}")
    return found


def test_sql_is_built_only_under_store() -> None:
    modules = [p for p in PACKAGE.rglob("*.py") if STORE not in p.parents]
    assert len(modules) > 50  # the walk found the package
    found = [v for p in sorted(modules) for v in violations(p)]
    assert not found, "SQL outside fhir_gateway/store/ — add a store query function:\n" + "\n".join(found)


def test_the_check_sees_each_form(tmp_path: Path) -> None:
    """Aliases, from-imports, dialect inserts and table handles are all caught."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import sqlalchemy as sa\n"
        "from sqlmodel import select\n"
        "from sqlalchemy.dialects import postgresql\n"
        "from sqlalchemy.dialects.sqlite import insert\n"
        "from fhir_gateway.store.tables import ResourceRow\n"
        "a = sa.select(ResourceRow.pk)\n"
        "b = sa.func.count()\n"
        "c = postgresql.insert(ResourceRow.__table__)\n"
        "d = sa.exc.IntegrityError\n"
        "def f(conn: sa.Connection) -> None: ...\n",
        encoding="utf-8",
    )
    found = violations(sample)
    assert sorted(v.split(" ", 1)[1] for v in found) == [
        "builds SQL with .func",
        "builds SQL with .insert",
        "builds SQL with .select",
        "imports insert from sqlalchemy.dialects.sqlite",
        "imports select from sqlmodel",
        "uses __table__",
    ]
