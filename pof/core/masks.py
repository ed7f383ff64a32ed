"""Magnitude masks: which weights a given sparsity removes (layer-wise, global, N:M).

Masks are boolean tensors shaped like the weight, ``True`` where the weight is kept.
Counts are exact: a layer pruned at sparsity ``s`` loses ``round(s * numel)`` weights,
ties broken by index so the result is deterministic.
"""

from __future__ import annotations

import numbers
import re

import torch
from torch import Tensor

from ..errors import PofError


def check_sparsity(sparsity: float) -> float:
    """Return ``sparsity`` as a float, or raise :class:`PofError` if it is outside [0, 1)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise PofError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    s = float(sparsity)
    if not 0.0 <= s < 1.0:
        raise PofError(f"sparsity must be in [0, 1) (0.7 = 70% zeros), got {sparsity!r}")
    return s


SCOPES = ("layer", "global")


def check_choice(name: str, value: object, options: tuple[str, ...]) -> str:
    """``value`` if it is one of ``options``, else a PofError naming ``name``."""
    if value not in options:
        raise PofError(f"{name} must be one of {', '.join(options)}, got {value!r}")
    return value  # type: ignore[return-value]


def check_whole(name: str, value: object, lo: int) -> int:
    """``value`` if it is a whole number (not a bool) >= ``lo``, else a PofError naming
    ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise PofError(f"{name} must be a whole number >= {lo}, got {value!r}")
    return value


def check_range(sparsity: float | str | tuple | list) -> float | tuple[float, float]:
    """A target sparsity or a range of them: ``0.7``, ``"0.3:0.9"`` or ``(0.3, 0.9)``.

    Returns a float, or ``(lo, hi)`` with ``0 <= lo < hi < 1``; raises :class:`PofError`.
    """
    if isinstance(sparsity, str) and ":" in sparsity:
        return parse_sparsity(sparsity, ranged=True)
    if isinstance(sparsity, (tuple, list)):
        if len(sparsity) != 2:
            raise PofError(f"a sparsity range is two fractions lo:hi, got {sparsity!r}")
        lo, hi = (check_sparsity(v) for v in sparsity)
        if not lo < hi:
            raise PofError(f"sparsity range needs lo < hi, got {lo:g}:{hi:g}")
        return lo, hi
    return check_sparsity(sparsity)


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _fraction(text: str) -> float:
    """One number of a sparsity text, in plain decimal notation."""
    t = text.strip()
    if not _NUMBER.fullmatch(t):
        hint = (" (use fractions: 0.5, not 50%)" if t.endswith("%") else
                " (one fraction here, not a range lo:hi)" if ":" in t else "")
        raise PofError(f"sparsity {t!r} is not a number{hint}")
    return float(t)


def parse_sparsity(text: str, ranged: bool = False) -> float | tuple[float, float]:
    """The one parser of sparsity text: a fraction in [0, 1) (``"0.7"``), or with
    ``ranged`` also a range ``"0.3:0.9"`` returned as ``(lo, hi)``.

    Plain decimal notation only (no ``nan``, ``inf`` or ``50%``); raises :class:`PofError`
    saying what is wrong.
    """
    text = str(text)
    if ranged and ":" in text:
        parts = text.split(":")
        if len(parts) != 2 or not all(_NUMBER.fullmatch(p.strip()) for p in parts):
            raise PofError(f"a sparsity range is two fractions lo:hi, got {text!r}")
        return check_range(tuple(float(p) for p in parts))
    return check_sparsity(_fraction(text))


def parse_sparsities(text: str) -> list[float]:
    """A comma-separated list of fractions in [0, 1), e.g. ``"0.3,0.5,0.7"``."""
    items = str(text).split(",")
    if not any(t.strip() for t in items):
        raise PofError(f"no sparsities given in {text!r}; expected e.g. '0.3,0.5,0.7'")
    if not all(t.strip() for t in items):
        raise PofError(f"empty item in sparsity list {text!r}; expected e.g. '0.3,0.5,0.7'")
    return [parse_sparsity(t) for t in items]


def parse_nm(pattern: str) -> tuple[int, int]:
    """Parse ``"N:M"`` (keep N of every M consecutive weights) into ``(N, M)``."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(pattern))
    if not match:
        raise PofError(f"pattern must look like 'N:M' (e.g. '2:4'), got {pattern!r}")
    n, m = int(match[1]), int(match[2])
    if m < 1 or n < 1 or n >= m:
        raise PofError(f"N:M pattern needs 1 <= N < M, got {pattern!r}")
    return n, m


def check_pattern(sparsity: object, pattern: str | None) -> object:
    """The sparsity to prune at: ``sparsity`` itself without a ``pattern``, else ``1 - N/M``.

    With an N:M ``pattern`` the sparsity is fixed, so ``sparsity`` must be None or equal to
    it; without one it is required. Raises :class:`PofError`.
    """
    if pattern is None:
        if sparsity is None:
            raise PofError("sparsity is required unless pattern='N:M' is given")
        return sparsity
    n, m = parse_nm(pattern)
    if sparsity is not None and not (
            isinstance(sparsity, numbers.Real) and abs(float(sparsity) - (1 - n / m)) <= 1e-9):
        raise PofError(f"sparsity {sparsity} disagrees with pattern {pattern} "
                       f"(= {1 - n / m:g}); pass sparsity=None")
    return 1 - n / m


def _kth_smallest(x: Tensor, k: int) -> Tensor:
    """Exact ``k``-th smallest (1-based) of flat ``x``.

    On large tensors a fixed-seed sample brackets the answer first, so the exact selection
    runs on ~2% of the values; falls back to a full ``kthvalue`` if the bracket misses.
    """
    n = x.numel()
    if n < 1 << 20:
        return x.kthvalue(k).values
    g = torch.Generator().manual_seed(0)
    sample = x[torch.randint(n, (1 << 16,), generator=g).to(x.device)].sort().values
    m, q = sample.numel(), k / n
    lo = sample[max(0, int((q - 0.01) * m))]
    hi = sample[min(m - 1, int((q + 0.01) * m))]
    rank = k - int((x < lo).sum())
    band = x[(x >= lo) & (x <= hi)]
    if 1 <= rank <= band.numel():
        return band.kthvalue(rank).values
    return x.kthvalue(k).values


def keep_all_but_lowest(scores: Tensor, k: int) -> Tensor:
    """Keep-mask over flat ``scores`` that drops exactly the ``k`` smallest."""
    if k <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    thr = _kth_smallest(scores, k)
    keep = scores > thr
    missing = (scores.numel() - k) - int(keep.sum())
    if missing > 0:  # ties at the threshold: prune the first ones, keep the last `missing`
        ties = (scores == thr).nonzero().flatten()
        keep[ties[len(ties) - missing:]] = True
    return keep


def layer_masks(weights: list[Tensor], sparsity: float) -> list[Tensor]:
    """Per-layer magnitude masks: each layer loses ``round(sparsity * numel)`` weights."""
    out = []
    for w in weights:
        a = w.detach().abs().flatten()
        out.append(keep_all_but_lowest(a, round(sparsity * a.numel())).view_as(w))
    return out


def global_masks(weights: list[Tensor], sparsity: float) -> list[Tensor]:
    """One magnitude threshold over all layers: ``round(sparsity * total)`` weights go."""
    flat = torch.cat([w.detach().abs().flatten().float() for w in weights])
    keep = keep_all_but_lowest(flat, round(sparsity * flat.numel()))
    return [k.view_as(w) for k, w in zip(keep.split([w.numel() for w in weights]), weights,
                                          strict=True)]


def nm_mask(weight: Tensor, n: int, m: int, name: str = "layer") -> Tensor:
    """Keep the ``n`` largest of every ``m`` consecutive input-channel weights.

    ``weight`` is unit-major (``(out, in, *kernel)``). For a conv the groups run along the
    input channels at each kernel position (the layout sparse tensor cores use); the
    layer's input channels (per group) must divide by ``m``.
    """
    w = weight.detach().abs()
    x = w.movedim(1, -1) if w.dim() > 2 else w  # (out, *kernel, in) or (out, in)
    if x.shape[-1] % m:
        raise PofError(
            f"N:M pattern {n}:{m}: layer {name!r} has {x.shape[-1]} input channels per "
            f"group, not divisible by {m}; exclude it (exclude=[{name!r}])"
        )
    groups = x.reshape(-1, m)
    idx = groups.topk(n, dim=1, sorted=False).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, idx, True)
    keep = keep.view_as(x)
    return keep.movedim(-1, 1) if w.dim() > 2 else keep


def compute_masks(
    weights: list[Tensor],
    sparsity: float,
    scope: str = "layer",
    pattern: str | None = None,
    names: list[str] | None = None,
) -> list[Tensor]:
    """Masks for ``weights`` at ``sparsity`` (``scope`` 'layer' or 'global', or N:M)."""
    names = names or [f"layer{i}" for i in range(len(weights))]
    if pattern is not None:
        n, m = parse_nm(pattern)
        return [nm_mask(w, n, m, nm) for w, nm in zip(weights, names, strict=True)]
    check_choice("scope", scope, SCOPES)
    return (layer_masks if scope == "layer" else global_masks)(weights, sparsity)
