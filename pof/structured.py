"""Structured (channel) pruning: whole channels, grouped and removed with Torch-Pruning.

A *channel group* is a set of channels that must go together (a conv's output channels,
the BatchNorm after it, every layer added to them through a residual, the depthwise conv
that carries them), found by Torch-Pruning's ``DependencyGraph``. A channel is judged by
what its *consumers* read from it: the input-channel columns of the layers that take it
as input. On the sphere those columns are what the pof penalty can shrink (each output
unit's row has norm 1), and a channel whose columns are all zero is read by nobody, so
removing it changes nothing. The flow:

- :func:`prune_channels` (``pof.prune(model, s, structure="channel")``) masks the pruned
  columns of every consumer (a ``PruneMask``; reversible with ``pof.unprune``) and, with
  ``recover="mean"``, adds each removed channel's mean activation (from a few unlabeled
  batches) times its columns to the consumer's output as a constant;
- :func:`remove_channels` (``pof.remove``) bakes the weights, folds that constant into the
  consumer's BatchNorm or bias and removes the channels physically: a smaller dense model.

Torch-Pruning is an optional dependency (``pip install "pof[speed]"``), imported here only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .channel_widths import record_widths
from .masks import _prune_lowest, check_sparsity
from .selection import _as_patterns, _matches

IMPORTANCE = ("pof", "magnitude")
PRUNABLE = (nn.Conv2d, nn.Linear)  # the layers whose channels are grouped and removed


def _tp():
    try:
        import torch_pruning
    except ImportError:
        raise ImportError("channel pruning needs Torch-Pruning: pip install 'pof[speed]' "
                          "(or pip install torch-pruning)") from None
    return torch_pruning


@dataclass
class ChannelGroup:
    """Channels of ``root``'s output that go together, and who reads them.

    ``consumers`` maps a layer name to ``(layer_idx, root_idx)`` pairs: input channel
    ``layer_idx`` of that layer carries root channel ``root_idx``.
    """

    root: str
    channels: int
    consumers: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    pruned: list[int] = field(default_factory=list)


@dataclass
class ChannelPlan:
    """The channel groups of a model and the input they were traced with."""

    groups: list[ChannelGroup]
    example_inputs: Tensor
    tp_groups: list = field(default_factory=list, repr=False)  # Torch-Pruning's, for importance

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
                w = weights[name].detach().double()
                col = (w * w).transpose(0, 1).flatten(1).sum(1) / (w * w).sum().clamp_min(1e-30)
                li, ri = zip(*pairs, strict=True)
                s.index_add_(0, torch.tensor(ri), col[list(li)].cpu())
            out.append(s)
        return out

    def select(self, ratio: float, scores: list[Tensor]) -> None:
        """Mark the ``round(ratio * channels)`` lowest-scoring channels of each group."""
        for g, s in zip(self.groups, scores, strict=True):
            k = round(ratio * g.channels)
            if k >= g.channels:
                raise ValueError(f"ratio {ratio:g} would remove all {g.channels} channels of "
                                 f"layer {g.root!r} (and its group); lower it or exclude it")
            g.pruned = (~_prune_lowest(s.float(), k)).nonzero().flatten().tolist()

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


def default_example(model: nn.Module) -> Tensor:
    """A dummy input: batch 1 at 32x32 with the first layer's input channels."""
    first = next((m for m in model.modules() if isinstance(m, PRUNABLE)), None)
    if isinstance(first, nn.Linear):
        return torch.zeros(1, first.in_features)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no Conv2d/Linear layer to prune")
    return torch.zeros(1, first.in_channels, 32, 32)


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _build_graph(model: nn.Module, example: Tensor):
    tp = _tp()
    was = model.training
    model.eval()  # tracing runs a forward: keep BatchNorm statistics as they are
    try:
        with torch.enable_grad():
            dg = tp.DependencyGraph().build_dependency(
                model, example_inputs=example.to(_device_of(model)), verbose=False)
    except Exception as e:  # noqa: BLE001 - any tracing failure is the model's, for the user
        msg = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"Torch-Pruning cannot trace {type(model).__name__} "
                         f"({type(e).__name__}: {msg}); pass example_inputs= of the right "
                         "shape, or prune this model unstructured") from None
    finally:
        model.train(was)
    return dg


def channel_groups(
    model: nn.Module,
    example_inputs: Tensor | None = None,
    exclude: str | Sequence[str] | None = None,
) -> ChannelPlan:
    """Trace ``model`` with Torch-Pruning and list its prunable channel groups.

    The last Conv2d/Linear (the classifier) keeps its outputs; ``exclude`` patterns keep
    the output channels of the layers they match (and so of their whole group).
    Raises ``ValueError`` naming a layer Torch-Pruning did not see being called.
    """
    _tp()  # a clear ImportError before any work
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv2d/Linear layer to prune")
    names = {m: n for n, m in model.named_modules()}
    pats = _as_patterns(exclude)
    for p in pats:
        if not any(_matches(n, p) for n, _ in layers):
            raise ValueError(f"exclude pattern {p!r} matches no Conv2d/Linear layer")
    ignored = [layers[-1][1]] + [m for n, m in layers if any(_matches(n, p) for p in pats)]
    example = default_example(model) if example_inputs is None else example_inputs
    dg = _build_graph(model, example)
    for n, m in layers:
        if m not in dg.module2node:
            raise ValueError(f"layer {n!r} is not called as a module in the traced forward "
                             "(its weight used functionally?); Torch-Pruning cannot group "
                             "its channels")
    groups, tp_groups = [], []
    for grp in dg.get_all_groups(ignored_layers=ignored, root_module_types=PRUNABLE):
        root = grp[0].dep.target.module
        g = ChannelGroup(names[root], len(grp[0].idxs))
        for item in grp:
            mod, handler = item.dep.target.module, item.dep.handler
            if not (isinstance(mod, PRUNABLE) and dg.is_in_channel_pruning_fn(handler)):
                continue
            if isinstance(mod, nn.Conv2d) and mod.groups > 1:
                if mod.groups == mod.in_channels == mod.out_channels:
                    continue  # depthwise: carries the channel, its consumer judges it
                raise ValueError(f"layer {names[mod]!r} is a grouped conv "
                                 f"(groups={mod.groups}); channel pruning supports "
                                 "depthwise and dense convs only")
            pairs = g.consumers.setdefault(names[mod], [])
            pairs += list(zip(item.idxs, item.root_idxs, strict=True))
        if g.consumers:
            groups.append(g)
            tp_groups.append(grp)
    if not groups:
        raise ValueError(f"{type(model).__name__}: no prunable channel group found")
    return ChannelPlan(groups, example.detach().cpu(), tp_groups)


def _magnitude_scores(plan: ChannelPlan) -> list[Tensor]:
    imp = _tp().importance.GroupMagnitudeImportance(p=2)
    with torch.no_grad():
        return [imp(g).detach().double().cpu() for g in plan.tp_groups]


def _batches(batches: Iterable, limit: int) -> Iterable[Tensor]:
    for i, b in enumerate(batches):
        if i >= limit:
            return
        yield b[0] if isinstance(b, list | tuple) else b


@torch.no_grad()
def _input_means(model: nn.Module, names: list[str], batches: Iterable, limit: int
                 ) -> dict[str, Tensor]:
    """Mean of each input channel of the named layers over ``batches`` (eval mode)."""
    mods = dict(model.named_modules())
    sums: dict[str, Tensor] = {}
    count = 0

    def hook(name):
        def fn(mod, args):
            x = args[0].detach().double()
            m = x.mean((0, 2, 3)) if x.dim() == 4 else x.flatten(0, -2).mean(0)
            sums[name] = sums.get(name, 0) + m
        return fn

    handles = [mods[n].register_forward_pre_hook(hook(n)) for n in names]
    was = model.training
    model.eval()
    dev = _device_of(model)
    try:
        for x in _batches(batches, limit):
            model(x.to(dev))
            count += 1
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    if count == 0:
        raise ValueError("mean recovery needs at least one batch of inputs")
    return {n: (s / count).float() for n, s in sums.items()}


def _add_output(mod: nn.Module, args, out: Tensor) -> Tensor:
    d = mod.channel_recovery
    return out + (d.view(1, -1, 1, 1) if out.dim() == 4 else d)


def prune_channels(
    model: nn.Module,
    ratio: float,
    example_inputs: Tensor | None = None,
    recover: str = "zero",
    batches: Iterable | None = None,
    num_batches: int = 10,
    importance: str = "pof",
    exclude: str | Sequence[str] | None = None,
) -> nn.Module:
    """Mask ``round(ratio * C)`` channels of every channel group, in place (reversible).

    ``importance="pof"`` drops the channels whose consumer columns hold the least weight
    energy (what the channel penalty pushes to zero); ``"magnitude"`` uses Torch-Pruning's
    ``GroupMagnitudeImportance`` (the conventional baseline). ``recover="mean"`` adds each
    removed channel's mean activation over ``num_batches`` of ``batches`` (tensors or
    ``(x, y)`` pairs; no labels used) back as a constant. :func:`remove_channels` (or
    ``pof.remove``) then removes the channels physically. Returns ``model``.
    """
    from .prune import PruneMask, pruned_layers

    ratio = check_sparsity(ratio)
    if importance not in IMPORTANCE:
        raise ValueError(f"importance must be one of {IMPORTANCE}, got {importance!r}")
    if recover not in ("zero", "mean"):
        raise ValueError(f"recover must be 'zero' or 'mean', got {recover!r}")
    if recover == "mean" and batches is None:
        raise ValueError("channel pruning with recover='mean' needs batches= (a few unlabeled "
                         "input batches to estimate each removed channel's mean)")
    if pruned_layers(model):
        raise ValueError("model is already pruned: pof.remove or pof.unprune it first")
    plan = channel_groups(model, example_inputs, exclude)
    mods = dict(model.named_modules())
    with torch.no_grad():
        weights = {n: mods[n].weight.detach().clone() for n in plan.consumers}
    scores = plan.scores(weights) if importance == "pof" else _magnitude_scores(plan)
    plan.select(ratio, scores)
    masks = plan.masks(weights)
    for name, mask in masks.items():
        parametrize.register_parametrization(mods[name], "weight", PruneMask(mask), unsafe=True)
    if recover == "mean":
        means = _input_means(model, list(masks), batches, num_batches)
        for name, mask in masks.items():
            w = weights[name] * ~mask  # the removed columns, as trained
            d = (w.flatten(2).sum(2) if w.dim() == 4 else w) @ means[name].to(w)
            mods[name].register_buffer("channel_recovery", d)
            mods[name]._pof_channel_hook = mods[name].register_forward_hook(_add_output)
    model._pof_channel_plan = plan
    return model


def is_channel_pruned(model: nn.Module) -> bool:
    """True if ``model`` carries channel masks from :func:`prune_channels`."""
    return getattr(model, "_pof_channel_plan", None) is not None


def clear_channel_plan(model: nn.Module) -> None:
    """Forget channel masks' plan and mean constants (``pof.unprune`` removes the masks)."""
    for m in model.modules():
        if hasattr(m, "_pof_channel_hook"):
            m._pof_channel_hook.remove()
            del m._pof_channel_hook
            del m._buffers["channel_recovery"]
    if hasattr(model, "_pof_channel_plan"):
        del model._pof_channel_plan


def _bake(model: nn.Module) -> None:
    """Make every parametrized weight a plain one (sphere and masks included)."""
    for name, m in model.named_modules():
        if hasattr(m, "_pof_cosine_handle"):
            raise ValueError(f"layer {name!r} is a cosine layer; its channels cannot be "
                             "removed (a plain layer cannot reproduce it)")
    for m in list(model.modules()):
        if parametrize.is_parametrized(m):
            for p in list(m.parametrizations):
                parametrize.remove_parametrizations(m, p, leave_parametrized=True)


def _fold_recovery(model: nn.Module) -> None:
    """Move each consumer's constant ``channel_recovery`` into its BatchNorm or bias."""
    from .sphere import following_norms

    norms = following_norms(model)
    mods = dict(model.named_modules())
    for name, m in list(mods.items()):
        if not hasattr(m, "_pof_channel_hook"):
            continue
        d = m.channel_recovery
        m._pof_channel_hook.remove()
        del m._pof_channel_hook
        del m._buffers["channel_recovery"]
        with torch.no_grad():
            bn = mods[norms[name]] if name in norms else None
            if bn is not None and bn.track_running_stats:
                bn.running_mean.sub_(d)  # bn(z + d) with mean m == bn(z) with mean m - d
            elif m.bias is not None:
                m.bias.add_(d)
            else:
                m.bias = nn.Parameter(d.clone())


def remove_channels(model: nn.Module, check: bool = True) -> nn.Module:
    """Remove the masked channels physically (Torch-Pruning), in place: a smaller dense model.

    Sphere weights are baked first. ``check=True`` compares the outputs on the traced
    example input before and after, and raises if they differ (a mis-grouped model).
    """
    plan = getattr(model, "_pof_channel_plan", None)
    if plan is None:
        raise ValueError("model has no channel masks (see pof.prune(..., structure='channel'))")
    x = plan.example_inputs.to(_device_of(model))
    was = model.training
    model.eval()
    with torch.no_grad():
        before = model(x) if check else None
    _bake(model)
    _fold_recovery(model)
    mods = dict(model.named_modules())
    dg = _build_graph(model, plan.example_inputs)
    for g in plan.groups:
        if g.pruned:
            root = mods[g.root]
            fn = dg.get_pruner_of_module(root).prune_out_channels
            dg.get_pruning_group(root, fn, g.pruned).prune()
    del model._pof_channel_plan
    record_widths(model)
    if check:
        with torch.no_grad():
            after = model(x)
        err = (after - before).abs().max().item()
        if err > 1e-4 * max(1.0, before.abs().max().item()):
            raise ValueError(f"removing channels changed the outputs by {err:.3g}: "
                             "Torch-Pruning mis-grouped this model; prune it unstructured")
    model.train(was)
    return model
