"""The core needs only torch: importing it pulls in none of the extras' packages."""

import subprocess
import sys

import pytest

EXTRAS = {"matplotlib", "sklearn", "PIL", "yaml", "tqdm", "safetensors", "numpy",
          "torch_pruning", "onnx", "onnxruntime"}

SCRIPT = """
import sys
import torch
before = set(sys.modules)
import pof
pof.to_sphere, pof.PrunePenalty, pof.prune, pof.remove, pof.create_model
import pof.core.structure, pof.core.channel_masks, pof.core.widths
import pof.structured, pof.export  # their optional packages load on first use
print(sorted({m.split('.')[0] for m in set(sys.modules) - before} & EXTRAS))
"""


def test_core_imports_torch_only():
    code = f"EXTRAS = {EXTRAS!r}\n" + SCRIPT
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_import_pof_imports_nothing_heavy():
    code = ("import sys, pof; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'matplotlib', 'sklearn', 'PIL', 'yaml', 'tqdm', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_core_code_never_imports_optional_or_outer_packages():
    """Not even lazily: Torch-Pruning and ONNX code lives in pof.structured / pof.export."""
    from pathlib import Path

    core = Path(__file__).parents[2] / "pof" / "core"
    for f in core.glob("*.py"):
        text = f.read_text()
        for name in ("torch_pruning", "onnx", "onnxruntime", "..structured", "..export",
                     "..training", "..data"):
            assert f"import {name}" not in text and f"from {name} " not in text, (f, name)


def test_integrations_import_their_libraries_only_when_used():
    code = ("import sys, pof.integrations, pof.integrations.driver; print(sorted(m for m in "
            "sys.modules if m.split('.')[0] in {'transformers', 'lightning', "
            "'pytorch_lightning', 'yaml', 'safetensors'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_ci_installs_what_the_integration_tests_need():
    import re
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]

    def closure(name: str) -> set[str]:
        out = set()
        for req in extras[name]:
            inner = re.fullmatch(r"pof\[(.*)\]", req)
            out |= set().union(*(closure(n) for n in inner[1].split(","))) if inner else {
                re.split(r"[<>=\[ ]", req)[0]}
        return out

    assert {"transformers", "accelerate", "lightning", "torch-pruning", "onnx",
            "onnxruntime"} <= closure("dev")
    assert '-e ".[all,dev]"' in (root / ".ci" / "run").read_text()
