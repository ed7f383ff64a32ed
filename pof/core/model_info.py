"""What pof reads off a model without changing it: the device its tensors are on, and
which BatchNorm directly follows which layer (traced with ``torch.fx`` when the model
traces)."""

from __future__ import annotations

import torch
from torch import nn

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
BN_FOLLOWED = (nn.modules.conv._ConvNd, nn.Linear)  # layers whose output a BatchNorm may take


def model_device(model: nn.Module) -> torch.device:
    """Device of ``model``'s first parameter or buffer (CPU for a model without tensors)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def following_norms(model: nn.Module) -> dict[str, str]:
    """Map layer name -> name of a BatchNorm applied directly to its output.

    Uses ``torch.fx`` tracing when the model traces; otherwise falls back to
    registration order (a BatchNorm registered right after the layer, of matching width).
    """
    mods = dict(model.named_modules())
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any untraceable model uses the fallback
        graph = None
    pairs: dict[str, str] = {}
    if graph is not None:
        for node in graph.nodes:
            layer = mods.get(node.target) if node.op == "call_module" else None
            if not isinstance(layer, BN_FOLLOWED):
                continue
            users = list(node.users)
            if len(users) == 1 and users[0].op == "call_module":
                if isinstance(mods.get(users[0].target), NORMS):
                    pairs[node.target] = users[0].target
        return pairs
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    for (n, m), (n2, m2) in zip(leaves, leaves[1:], strict=False):
        if isinstance(m, BN_FOLLOWED) and isinstance(m2, NORMS):
            out = m.out_features if isinstance(m, nn.Linear) else m.out_channels
            if m2.num_features == out:
                pairs[n] = n2
    return pairs
