"""No import circle in pof/ or bench/: every import, lazy ones inside functions included."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def module_files(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (a folder under ROOT)."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that the module ``name`` (at ``path``) imports.

    ``from pkg import sub`` counts as an import of the module ``pkg.sub`` when it is one,
    else of ``pkg``; a bench script's plain ``import x`` is ``bench.x`` (the script's folder
    is first on ``sys.path``).
    """
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg[:len(pkg) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            subs = [f"{base}.{a.name}" for a in node.names]
            names = [s for s in subs if s in modules or f"bench.{s}" in modules]
            names += [base] if len(names) < len(subs) else []
        else:
            continue
        for n in names:
            n = n if n in modules or not name.startswith("bench.") else f"bench.{n}"
            if n in modules and n != name:
                found.add(n)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_cycle_finder_finds_a_circle_and_only_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_resolve_relative_and_bench_names(tmp_path):
    mods = {"p": tmp_path / "__init__.py", "p.a": tmp_path / "a.py", "p.b": tmp_path / "b.py",
            "bench.x": tmp_path / "x.py", "bench.y": tmp_path / "y.py"}
    mods["p.a"].write_text("from . import b\ndef f():\n    from .b import g\n")
    mods["bench.x"].write_text("import y\nfrom y import z\nimport os\n")
    assert imported("p.a", mods["p.a"], mods) == {"p.b"}  # lazy imports count too
    assert imported("bench.x", mods["bench.x"], mods) == {"bench.y"}


@pytest.mark.parametrize("package", ["pof", "bench"])
def test_no_import_circle(package):
    modules = module_files(package)
    graph = {name: imported(name, path, modules) for name, path in modules.items()}
    assert cycles(graph) == []


def test_no_private_name_is_imported_from_another_pof_module():
    """A name one module shares with others is public (no ``from .x import _name``)."""
    found = []
    for name, path in module_files("pof").items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "")
                                                     .startswith("pof")):
                found += [f"{name}: {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []
