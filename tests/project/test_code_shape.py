"""The package stays readable: no module in pof/ over 400 lines, no function over 60."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "pof"
EXCEPTIONS: dict[str, int] = {}  # "module:function" -> allowed lines, with the reason here


def test_no_module_over_400_lines_and_no_function_over_60():
    long = []
    for f in sorted(PKG.rglob("*.py")):
        src = f.read_text()
        rel = f.relative_to(PKG.parent).as_posix()
        if len(src.splitlines()) > 400:
            long.append(f"{rel}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > EXCEPTIONS.get(f"{rel}:{node.name}", 60):
                    long.append(f"{rel}:{node.name}: {n} lines")
    assert not long, long
