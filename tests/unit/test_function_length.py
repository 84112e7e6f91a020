"""No function in the package is over 80 lines (bench/ and tests/ aside): a long function is where a
second copy of a concern hides, and where a later feature has no obvious place to land."""

from __future__ import annotations

import ast

from conftest import ROOT

LIMIT = 80


def test_no_function_in_the_package_is_over_80_lines():
    long = []
    for path in sorted((ROOT / "gptnl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > LIMIT:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
