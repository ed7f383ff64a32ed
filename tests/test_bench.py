"""bench/cifar10.py: every arm is a valid training config and is read back by its values."""

import importlib.util
import sys
from pathlib import Path

import pytest

from pof.training.config import TrainConfig

SPEC = importlib.util.spec_from_file_location(
    "bench_cifar10", Path(__file__).parent.parent / "bench" / "cifar10.py")
bench = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = bench  # dataclasses look their module up
SPEC.loader.exec_module(bench)
PLAN = bench.PROFILES["medium"][0]


@pytest.mark.parametrize("name", list(bench.ARMS))
def test_arm_is_a_valid_config_and_reads_back(name):
    values = bench.ARMS[name].config(PLAN)
    cfg = TrainConfig(**values)  # the CLI flags carry the same values
    assert bench.arm_of({**vars(cfg), "init": "pre.safetensors"}, PLAN) == name
    assert bench.arm_of({**vars(cfg), "init": None}, PLAN) == f"{name}-scratch"
    flags = bench.arm_flags(PLAN, name)
    assert flags[:2] == ["--penalty", values["penalty"]]


def test_every_profile_names_known_arms():
    for plans in bench.PROFILES.values():
        for plan in plans:
            assert set(plan.arms) | set(plan.scratch) <= set(bench.ARMS)


@pytest.mark.parametrize("script", ["structured.py", "latency.py", "fold_cost.py"])
def test_speed_bench_scripts_start(script):
    """The issue-10 scripts import the ported modules and parse their flags."""
    import subprocess

    bench_dir = Path(__file__).parent.parent / "bench"
    out = subprocess.run([sys.executable, str(bench_dir / script), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--out" in out
