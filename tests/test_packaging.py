"""The core needs only torch: importing it pulls in none of the extras' packages."""

import subprocess
import sys

EXTRAS = {"matplotlib", "sklearn", "PIL", "yaml", "tqdm", "safetensors", "numpy"}

SCRIPT = """
import sys
import torch
before = set(sys.modules)
import pof
pof.to_sphere, pof.PrunePenalty, pof.prune, pof.remove, pof.create_model
import pof.core.structure
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
