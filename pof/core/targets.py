"""What pof can prune: one weight tensor per layer, found by parameter, with its unit axis.

A :class:`Target` is a weight with an output-unit axis — the axis the sphere normalises
over and the per-unit mean runs along:

- ``Linear``, ``Conv1d/2d/3d`` ``weight``: axis 0;
- ``ConvTranspose1d/2d/3d`` ``weight`` (stored ``(in, out, *k)``): axis 1 (``groups=1``);
- Hugging Face ``Conv1D`` ``weight`` (GPT-2; stored ``(in, out)``): axis 1, the last;
- ``nn.MultiheadAttention.in_proj_weight``: axis 0, in three groups (q, k, v) that are
  pruned, penalised and recovered like three layers;
- ``nn.Embedding`` ``weight``: axis 0 (one unit per token), left out unless named.

:func:`weight_target` is the one place that decides this for a module.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn.modules.conv import _ConvTransposeNd
from torch.nn.utils import parametrize

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
            nn.ConvTranspose3d, nn.Linear)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)  # candidates for "the first conv stays dense"
EMBEDDING_REASON = "embedding, left out by default (select it by name)"


@dataclass(frozen=True, eq=False)
class Target:
    """One prunable weight: ``getattr(module, attr)``, output units along ``unit_dim``.

    ``groups`` > 1 splits the units into that many equal blocks (q/k/v of an attention
    ``in_proj_weight``) that prune, penalise and recover separately, like layers.
    """

    name: str
    module: nn.Module
    attr: str = "weight"
    unit_dim: int = 0
    groups: int = 1

    @property
    def key(self) -> str:
        """The parameter's dotted name, e.g. ``"blocks.0.attn.in_proj_weight"``."""
        return weight_key(self.name, self.attr)

    @property
    def weight(self) -> Tensor:
        """The effective weight (through any parametrization; differentiable)."""
        return getattr(self.module, self.attr)

    def pieces(self, w: Tensor | None = None) -> list[Tensor]:
        """``w`` (default: the effective weight) unit axis first, split into its groups."""
        u = to_units(self.weight if w is None else w, self.unit_dim)
        return list(u.chunk(self.groups, 0)) if self.groups > 1 else [u]

    def piece_names(self) -> list[str]:
        """Names of :meth:`pieces`: the key, or ``key[q]``, ``key[k]``, ``key[v]``."""
        if self.groups == 3:
            return [f"{self.key}[{g}]" for g in "qkv"]
        if self.groups > 1:
            return [f"{self.key}[{i}]" for i in range(self.groups)]
        return [self.key]


def weight_key(name: str, attr: str) -> str:
    """The dotted name of module ``name``'s parameter ``attr`` (``attr`` for the root)."""
    return f"{name}.{attr}" if name else attr


def to_units(w: Tensor, unit_dim: int) -> Tensor:
    """View of ``w`` with the output-unit axis first (a no-op for ``unit_dim=0``)."""
    return w if unit_dim == 0 else w.movedim(unit_dim, 0)


def from_units(u: Tensor, unit_dim: int) -> Tensor:
    """Inverse of :func:`to_units`."""
    return u if unit_dim == 0 else u.movedim(0, unit_dim)


def unit_view(v: Tensor, w: Tensor, unit_dim: int = 0) -> Tensor:
    """Reshape a per-unit vector ``v`` to broadcast against ``w`` along ``unit_dim``."""
    shape = [1] * w.dim()
    shape[unit_dim] = -1
    return v.view(shape)


def is_hf_conv1d(m: nn.Module | type) -> bool:
    """True for Hugging Face's ``transformers.pytorch_utils.Conv1D`` (a transposed Linear),
    an instance or a class, without importing transformers."""
    cls = m if isinstance(m, type) else type(m)
    return any(c.__name__ == "Conv1D" and c.__module__.startswith("transformers")
               for c in cls.__mro__)


def weight_target(name: str, m: nn.Module) -> tuple[Target | None, str | None]:
    """``m``'s prunable weight and, if pof leaves it dense unless asked, why.

    ``(target, None)`` for a supported weight, ``(target, reason)`` for an embedding
    (selectable by name), ``(None, reason)`` for a layer pof cannot prune, ``(None, None)``
    for a module without a layer weight.
    """
    if isinstance(m, _ConvTransposeNd):
        if m.groups != 1:
            return None, "unsupported: grouped ConvTranspose (units span groups)"
        return Target(name, m, "weight", 1), None
    if isinstance(m, PRUNABLE):
        return Target(name, m, "weight", 0), None
    if is_hf_conv1d(m):
        return Target(name, m, "weight", 1), None
    if isinstance(m, nn.MultiheadAttention):
        if not m._qkv_same_embed_dim:
            return None, ("unsupported: MultiheadAttention with kdim/vdim != embed_dim "
                          "(separate q/k/v weights)")
        return Target(name, m, "in_proj_weight", 0, groups=3), None
    if isinstance(m, nn.Embedding):
        return Target(name, m, "weight", 0), EMBEDDING_REASON
    return None, None


def raw_param(m: nn.Module, attr: str) -> Tensor | None:
    """The stored parameter behind ``m.<attr>`` (``original`` when parametrized)."""
    if parametrize.is_parametrized(m, attr):
        return getattr(m.parametrizations, attr).original
    return m._parameters.get(attr)
