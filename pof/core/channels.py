"""Channel groups and which channels a ratio removes: the plan behind structured pof.

A *channel group* is a set of channels that must go together (a conv's output channels,
the BatchNorm after it, every layer added to them through a residual, the depthwise conv
that carries them). A channel is judged by what its *consumers* read from it: the
input-channel columns of the layers that take it as input. On the sphere each output
unit's row has norm 1, so columns are what the pof penalty can shrink; and a channel whose
columns are all zero is read by nobody, so removing it changes nothing.

A :class:`ChannelPlan` is plain data (layer names and channel indices). Tracing a model
to find its groups needs Torch-Pruning and lives in :mod:`pof.structured`; the plan, its
scores and its column masks need torch only, so the penalty can use them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import PofError
from .masks import check_whole, keep_all_but_lowest


@dataclass
class ChannelGroup:
    """Channels of ``root``'s output that go together, and who reads them.

    ``consumers`` maps a layer name to ``(layer_idx, root_idx)`` pairs: input channel
    ``layer_idx`` of that layer carries root channel ``root_idx``. ``pruned`` lists the
    root channels the last :meth:`ChannelPlan.select` marked for removal.
    """

    root: str
    channels: int
    consumers: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    pruned: list[int] = field(default_factory=list)


@dataclass
class ChannelPlan:
    """The channel groups of a model, the input they were traced with and the tracer's
    own groups (``tracer_groups``: opaque, for its importance measures)."""

    groups: list[ChannelGroup]
    example_inputs: Tensor
    tracer_groups: list = field(default_factory=list, repr=False)

    def __deepcopy__(self, memo: dict) -> ChannelPlan:
        """A copy without ``tracer_groups``: they hold the traced model's own modules and
        autograd nodes (and are used only right after tracing, for importance scores)."""
        return ChannelPlan(copy.deepcopy(self.groups, memo), self.example_inputs.clone(), [])

    @property
    def consumers(self) -> list[str]:
        """Names of every layer that reads a prunable channel, in first-seen order."""
        return list(dict.fromkeys(n for g in self.groups for n in g.consumers))

    def scores(self, weights: dict[str, Tensor]) -> list[Tensor]:
        """pof importance of each group's channels: the fraction of each consumer's weight
        energy in the channel's columns, summed over consumers."""
        out = []
        for g in self.groups:
            s = torch.zeros(g.channels, dtype=torch.float64)
            for name, pairs in g.consumers.items():
                sq = weights[name].detach().double() ** 2
                col = sq.transpose(0, 1).flatten(1).sum(1) / sq.sum().clamp_min(1e-30)
                li, ri = zip(*pairs, strict=True)
                s.index_add_(0, torch.tensor(ri), col[list(li)].cpu())
            out.append(s)
        return out

    def select(self, ratio: float, scores: list[Tensor], round_to: int = 1) -> None:
        """Mark the ``round(ratio * channels)`` lowest-scoring channels of each group;
        ``round_to`` > 1 rounds each group's kept channels to a multiple of it (at least
        one multiple, at most all of them), which runtimes that block channels run faster.

        Raises :class:`PofError` naming the layer of a group that would lose every channel.
        """
        for g, s in zip(self.groups, scores, strict=True):
            k = g.channels - kept_channels(g.channels, ratio, round_to)
            if k >= g.channels:
                raise PofError(f"ratio {ratio:g} would remove all {g.channels} channels of "
                               f"layer {g.root!r} (and its group); lower it or exclude it")
            g.pruned = (~keep_all_but_lowest(s.float(), k)).nonzero().flatten().tolist()

    def masks(self, weights: dict[str, Tensor]) -> dict[str, Tensor]:
        """Keep-masks (shaped like each consumer's weight) without the pruned columns."""
        out = {n: torch.ones_like(weights[n], dtype=torch.bool) for n in self.consumers}
        for g in self.groups:
            gone = set(g.pruned)
            for name, pairs in g.consumers.items():
                cols = [li for li, ri in pairs if ri in gone]
                out[name][:, cols] = False
        return out

    def masks_at(self, ratio: float, weights: dict[str, Tensor]) -> dict[str, Tensor]:
        """Select at ``ratio`` with the pof importance and return the keep-masks."""
        self.select(ratio, self.scores(weights))
        return self.masks(weights)


def kept_channels(channels: int, ratio: float, round_to: int = 1) -> int:
    """How many of ``channels`` a group keeps at ``ratio`` removed: ``channels -
    round(ratio * channels)``, rounded to the nearest multiple of ``round_to`` when it is > 1
    (a tie keeps more; not below ``round_to``, not above ``channels``)."""
    kept = channels - round(ratio * channels)
    if round_to > 1 and kept > 0:
        kept = min(channels, max(round_to, round_to * math.floor(kept / round_to + 0.5)))
    return kept


#: ``pof prune --speedup`` / ``--latency-ms`` measure these multiples unless told otherwise:
#: onnxruntime's CPU convolutions ran widths that are not multiples of 8 no faster, or
#: slower, than the next multiple up (docs/results/structured.md, "Widths rounded").
SPEED_ROUND_TO = (1, 8, 16)


def round_to_list(value: int | str | list[int] | tuple[int, ...] | None) -> list[int] | None:
    """``round_to`` as a sorted list of distinct whole numbers >= 1 (``"8,16"``, ``8`` or
    ``[1, 8]``); None stays None (the caller's default)."""
    if value is None:
        return None
    items: list = value.split(",") if isinstance(value, str) else (
        list(value) if isinstance(value, (list, tuple)) else [value])
    out = []
    for x in items:
        if isinstance(x, str):
            try:
                x = int(x.strip())
            except ValueError:
                raise PofError(f"round_to must be whole numbers >= 1 (N or N,N,...), "
                               f"got {value!r}") from None
        out.append(check_whole("round_to", x, 1))
    if not out:
        raise PofError(f"round_to must be whole numbers >= 1 (N or N,N,...), got {value!r}")
    return sorted(set(out))
