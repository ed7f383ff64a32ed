"""2:4 weights for sparse tensor cores (``torch.sparse.to_sparse_semi_structured``).

PyTorch runs semi-structured (2:4) sparse weights in ``nn.Linear`` on NVIDIA GPUs of
compute capability 8.0 and up (fp16/bf16). Not measured yet (see docs/method.md,
section 9).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import PofError


def check_two_four(weight: torch.Tensor, name: str) -> None:
    """Raise :class:`PofError` unless every 4 consecutive input weights hold at most 2
    non-zeros."""
    w = weight.detach()
    if w.shape[-1] % 4:
        raise PofError(f"layer {name!r}: {w.shape[-1]} inputs is not a multiple of 4")
    if ((w.reshape(-1, 4) != 0).sum(1) > 2).any():
        raise PofError(f"layer {name!r} is not 2:4 sparse: prune it with pattern='2:4' and "
                       "pof.remove it first")


def to_semi_structured(model: nn.Module, dtype: torch.dtype = torch.float16) -> nn.Module:
    """Store every 2:4-sparse ``nn.Linear`` weight of ``model`` as a semi-structured sparse
    tensor (in ``dtype``, on the GPU), in place. Layers that are not 2:4 sparse raise."""
    if not torch.cuda.is_available():
        raise PofError("semi-structured sparse weights need a CUDA GPU (compute capability "
                       ">= 8.0); none is available")
    if torch.cuda.get_device_capability() < (8, 0):
        raise PofError("semi-structured sparse weights need compute capability >= 8.0")
    from torch.sparse import to_sparse_semi_structured

    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            check_two_four(m.weight, name)
            w = m.weight.detach().to("cuda", dtype)
            m.weight = nn.Parameter(to_sparse_semi_structured(w), requires_grad=False)
    return model
