"""No function in fhir_gateway/ is longer than 80 lines (the migrations excepted).

Why: a function that fits on a screen can be read and reviewed as one thing; past that, the parts
want names of their own. Counted from the `def` line to the last line, docstring included
(decorators not: a click command's options are declarations, not logic); nested functions count
in their enclosing function too. Alembic migrations are exempt: each is a
one-off script that is written once and never changed.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "fhir_gateway"
MAX_LINES = 80
EXEMPT = ("migrations",)  # path parts under fhir_gateway/


def long_functions(root: Path = PACKAGE, limit: int = MAX_LINES) -> list[str]:
    """`path:line name (n lines)` for every function or method longer than `limit` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if any(part in EXEMPT for part in path.relative_to(root).parts):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_80_lines() -> None:
    too_long = long_functions()
    assert not too_long, "split these into well-named parts:\n" + "\n".join(too_long)


def test_the_check_finds_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x = {i}" for i in range(MAX_LINES))
    (tmp_path / "long.py").write_text(f"@decorated\ndef long():\n{body}\n", encoding="utf-8")
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "old.py").write_text(f"def upgrade():\n{body}\n", encoding="utf-8")
    (tmp_path / "short.py").write_text("def short():\n    return 1\n", encoding="utf-8")
    assert long_functions(tmp_path) == [f"{tmp_path.name}/long.py:2 long ({MAX_LINES + 1} lines)"]
