"""Nothing pof does to one model reaches another (issue 25 item 8).

``torch.nn.utils.parametrize`` keeps a weight's property on the module's class and a
``copy.deepcopy`` shares that class, so removing a parametrization on a copy used to delete
the original's ``weight`` (AttributeError on its next forward). Each case builds a model
in some pof state, deep-copies it, runs one pof operation on one of the two, and checks
that the other's outputs and every later pof call on it match an untouched twin.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pof
from pof.core.channel_masks import is_channel_pruned
from pof.core.parametrizations import pruned_layers
from pof.core.sphere import sphere_layers

X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _net() -> nn.Module:
    """Two conv+BN blocks and a Linear (the issue's minimal case), with non-trivial BN."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    with torch.no_grad():
        for bn in (m[1], m[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
    return m.eval()


def _state(name: str) -> nn.Module:
    m = _net()
    if name in ("sphere", "pruned-sphere", "channels"):
        pof.to_sphere(m)
    if name in ("pruned-sphere", "pruned-plain"):
        pof.prune(m, 0.5, recover="mean")
    if name == "channels":
        pof.prune_channels(m, 0.5, X[:1], recover="mean", batches=[X], num_batches=1)
    if name == "sphere-loaded":  # the structure rebuilt from a file (as pof.load does)
        with tempfile.TemporaryDirectory() as d:
            pof.to_sphere(m)
            pof.save(m, Path(d) / "m.safetensors")
            m, _ = pof.load(Path(d) / "m.safetensors", model=_net())
    return m.eval()


def _journey(m: nn.Module) -> list[torch.Tensor]:
    """The outputs of ``m`` and of every pof call a user might make on it next."""
    outs = [m(X)]
    if is_channel_pruned(m):
        pof.remove_channels(m)
        return [*outs, m(X)]
    if pruned_layers(m):
        pof.unprune(m)
        outs.append(m(X))
    pof.prune(m, 0.6, recover="mean")
    outs.append(m(X))
    pof.remove(m)
    outs.append(m(X))
    if sphere_layers(m):
        pof.from_sphere(m)
        outs.append(m(X))
    return outs


def _train_gmp(m: nn.Module) -> None:
    method = pof.GMP(m, 0.5, total_steps=3, every=1)
    for _ in range(3):
        method.after_step()
    pof.remove(m)


def _train_on_the_fly(m: nn.Module, make: Callable = lambda m: pof.OnTheFly(m, (0.3, 0.9))
                      ) -> None:
    method = make(m)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m.train()
    loss = method.loss(X, torch.arange(4) % 5, F.cross_entropy)
    opt.zero_grad()
    loss.backward()
    opt.step()
    method.after_step()
    pof.prune(m, 0.5)
    pof.remove(m)


OPS: dict[str, tuple[str, Callable[[nn.Module], object]]] = {
    "from_sphere": ("sphere", pof.from_sphere),
    "from_sphere-loaded": ("sphere-loaded", pof.from_sphere),
    "prune": ("sphere", lambda m: pof.prune(m, 0.7, recover="mean")),
    "remove": ("pruned-sphere", pof.remove),
    "unprune": ("pruned-plain", pof.unprune),
    "unprune-sphere": ("pruned-sphere", pof.unprune),
    "remove_channels": ("channels", pof.remove_channels),
    "gmp": ("plain", _train_gmp),
    "gmp-sphere": ("sphere", _train_gmp),
    "on_the_fly": ("plain", _train_on_the_fly),
    "one_target": ("plain", lambda m: _train_on_the_fly(m, lambda m: pof.OneTarget(m, 0.5))),
    "cram": ("plain", lambda m: _train_on_the_fly(m, lambda m: pof.CramStyle(m, (0.3, 0.9)))),
    "l1": ("plain", lambda m: _train_on_the_fly(m, lambda m: pof.L1(m))),
}


@pytest.mark.parametrize("side", ["copy", "original"])
@pytest.mark.parametrize("op", list(OPS))
def test_an_operation_on_one_copy_leaves_the_other_as_it_was(op: str, side: str) -> None:
    if op == "remove_channels" and find_spec("torch_pruning") is None:
        pytest.skip("needs the [speed] extra (Torch-Pruning)")
    state, fn = OPS[op]
    original = _state(state)
    twin = _state(state)  # built the same way, never copied
    clone = copy.deepcopy(original)
    fn(clone if side == "copy" else original)
    other = original if side == "copy" else clone
    with torch.no_grad():
        got, want = _journey(other), _journey(twin)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6)
