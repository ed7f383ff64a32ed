"""Which weights of a model pof acts on, chosen by parameter and selected by name pattern.

A *target* is one weight tensor with an output-unit axis: ``Linear``/``Conv{1,2,3}d``
``weight`` (axis 0), ``ConvTranspose{1,2,3}d`` ``weight`` (axis 1, its out-channel axis),
Hugging Face ``Conv1D`` ``weight`` (stored ``(in, out)``: the last axis), and
``nn.MultiheadAttention.in_proj_weight`` (rows, in three output groups: query, key, value,
each pruned to the target on its own). ``nn.Embedding`` weights (one unit per token) are
left out unless a pattern names them. Every other weight is reported as dense with its
reason by :func:`weight_inventory`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import Tensor, nn
from torch.nn.modules.conv import _ConvTransposeNd
from torch.nn.utils import parametrize

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
            nn.ConvTranspose3d, nn.Linear)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)  # candidates for "the first conv stays dense"


@dataclass(frozen=True, eq=False)
class Target:
    """One prunable weight: ``getattr(module, attr)``, output units along ``unit_dim``.

    ``groups`` > 1 splits the units into that many equal blocks (q/k/v of an attention
    ``in_proj_weight``) that prune, penalise and recover separately, like three layers.
    """

    name: str
    module: nn.Module
    attr: str = "weight"
    unit_dim: int = 0
    groups: int = 1

    @property
    def key(self) -> str:
        """The parameter's dotted name, e.g. ``"blocks.0.attn.in_proj_weight"``."""
        return f"{self.name}.{self.attr}" if self.name else self.attr

    @property
    def weight(self) -> Tensor:
        """The effective weight (through any parametrization; differentiable)."""
        return getattr(self.module, self.attr)

    def pieces(self, w: Tensor | None = None) -> list[Tensor]:
        """``w`` (default: the effective weight) split into its unit groups, unit axis first."""
        u = to_units(self.weight if w is None else w, self.unit_dim)
        return list(u.chunk(self.groups, 0)) if self.groups > 1 else [u]

    def piece_names(self) -> list[str]:
        """Names of :meth:`pieces`: the key, or ``key[q]``, ``key[k]``, ``key[v]``."""
        if self.groups == 3:
            return [f"{self.key}[{g}]" for g in "qkv"]
        if self.groups > 1:
            return [f"{self.key}[{i}]" for i in range(self.groups)]
        return [self.key]


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


def unit_dim_of(m: nn.Module, attr: str = "weight") -> int:
    """Output-unit axis of ``m``'s weight ``attr``."""
    if isinstance(m, _ConvTransposeNd) or (is_hf_conv1d(m) and attr == "weight"):
        return 1
    return 0


def _candidate(name: str, m: nn.Module) -> tuple[Target | None, str | None]:
    """``(target, None)`` for a supported weight; ``(None, reason)`` for one pof leaves
    dense (an embedding's reason applies unless a pattern selects it)."""
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
        return None, "embedding, left out by default (select it by name)"
    return None, None


def _is_parametrized(m: nn.Module, attr: str) -> bool:
    return parametrize.is_parametrized(m, attr)


def _as_patterns(patterns: str | Sequence[str] | None) -> list[str]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        return [patterns]
    return list(patterns)


def _matches(name: str, pattern: str) -> bool:
    """A pattern matches a name exactly, as a glob, or as a dotted prefix."""
    return fnmatchcase(name, pattern) or name.startswith(pattern + ".")


def _matches_target(t: Target, pattern: str) -> bool:
    return _matches(t.name, pattern) or _matches(t.key, pattern)


@dataclass(frozen=True, eq=False)
class WeightInfo:
    """One weight of a model: its target (if pof can prune it) and, if left dense, why."""

    key: str
    name: str
    attr: str
    target: Target | None
    reason: str | None  # None: in the selection


def weight_inventory(
    model: nn.Module,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    keep_first_conv: bool = True,
) -> list[WeightInfo]:
    """Every layer weight of ``model`` (2-D or more), selected or with its dense reason.

    Raises ``ValueError`` if an include/exclude pattern matches no prunable weight.
    """
    mods = dict(model.named_modules())
    rows: list[tuple[Target | None, str, str, str | None]] = []  # target, name, attr, reason
    for name, m in mods.items():
        if "parametrizations" in name.split(".") or type(m).__name__ in ("UnitSphere",
                                                                          "PruneMask"):
            continue
        target, reason = _candidate(name, m)
        if isinstance(m, nn.Embedding):
            target = Target(name, m, "weight", 0)  # selectable by name only
        if target is not None:
            rows.append((target, name, target.attr, reason))
        params = list(m.named_parameters(recurse=False))
        params += [(a, getattr(m.parametrizations, a).original)
                   for a in getattr(m, "parametrizations", {})]
        for pname, p in params:
            if (target is not None and pname == target.attr) or p is None or p.dim() < 2:
                continue
            why = reason or f"not a layer weight ({type(m).__name__}.{pname})"
            rows.append((None, name, pname, why))
    # tied weights (a parameter shared by two modules, e.g. GPT-2's lm_head and wte)
    seen: dict[int, str] = {}
    for i, (_, name, attr, _r) in enumerate(rows):
        p = _raw_param(mods[name], attr)
        key = f"{name}.{attr}" if name else attr
        if p is not None and id(p) in seen:
            rows[i] = (None, name, attr, f"tied to {seen[id(p)]} (shared parameter)")
        elif p is not None:
            seen[id(p)] = key
    # first conv, include / exclude
    inc, exc = _as_patterns(include), _as_patterns(exclude)
    prunable = [t for t, _, _, _ in rows if t is not None]
    for kind, pats in (("include", inc), ("exclude", exc)):
        for p in pats:
            if not any(_matches_target(t, p) for t in prunable):
                keys = [t.key for t in prunable]
                raise ValueError(
                    f"{kind} pattern {p!r} matches no prunable weight; "
                    f"they are: {', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''}"
                )
    first_conv = next((t.name for t in prunable if isinstance(t.module, CONVS)), None)
    out = []
    for t, name, attr, reason in rows:
        if t is not None:
            if inc:
                reason = None if any(_matches_target(t, p) for p in inc) else \
                    "not matched by include"
            elif reason is None and keep_first_conv and t.name == first_conv:
                reason = "first conv kept dense"
            if reason is None and any(_matches_target(t, p) for p in exc):
                reason = "excluded by pattern"
        out.append(WeightInfo(f"{name}.{attr}" if name else attr, name, attr, t, reason))
    return out


def _raw_param(m: nn.Module, attr: str) -> Tensor | None:
    if _is_parametrized(m, attr):
        return getattr(m.parametrizations, attr).original
    return m._parameters.get(attr)


def select_weights(
    model: nn.Module,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    keep_first_conv: bool = True,
) -> list[Target]:
    """The weights pof acts on, as :class:`Target` s.

    By default every supported weight except the network's first conv (in registration
    order) and embeddings. ``include``/``exclude`` are glob patterns over module names or
    parameter names (``"fc"``, ``"layer1.*"``, ``"*.in_proj_weight"``); a pattern also
    matches everything under a dotted prefix. An ``include`` list replaces the default
    selection (the first conv and embeddings are then selectable). Raises ``ValueError``
    if a pattern matches no weight or nothing is selected.
    """
    inv = weight_inventory(model, include, exclude, keep_first_conv)
    if not any(w.target is not None for w in inv):
        raise ValueError(
            f"{type(model).__name__} has no prunable layer (pof acts on Linear, Conv1d/2d/3d, "
            "ConvTranspose, MultiheadAttention and Hugging Face Conv1D weights)"
        )
    chosen = [w.target for w in inv if w.target is not None and w.reason is None]
    if not chosen:
        raise ValueError("no prunable layer left after include/exclude")
    return chosen


def select_layers(
    model: nn.Module,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    keep_first_conv: bool = True,
) -> list[tuple[str, nn.Module]]:
    """``(module name, module)`` of the selected weights (see :func:`select_weights`)."""
    return [(t.name, t.module) for t in select_weights(model, include, exclude, keep_first_conv)]


def named_parents(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Map a module's dotted name to ``(parent, attribute)`` so it can be replaced."""
    out: dict[str, tuple[nn.Module, str]] = {}
    for pname, parent in model.named_modules():
        for child, _ in parent.named_children():
            out[f"{pname}.{child}" if pname else child] = (parent, child)
    return out


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Swap the submodule called ``name`` for ``new``."""
    parent, attr = named_parents(model)[name]
    setattr(parent, attr, new)


def flat_rows(weight_shape: Iterable[int]) -> tuple[int, int]:
    """(rows, cols) of a weight seen as one row per output unit."""
    shape = list(weight_shape)
    cols = 1
    for s in shape[1:]:
        cols *= s
    return shape[0], cols
