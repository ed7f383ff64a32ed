"""Channel groups of a model, traced with Torch-Pruning's ``DependencyGraph``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..core.channels import ChannelGroup, ChannelPlan
from ..core.model_info import model_device
from ..core.selection import Patterns, as_patterns, name_matches, recorded_selection
from ..errors import PofError
from ..optional import require

PRUNABLE = (nn.Conv2d, nn.Linear)  # the layers whose channels are grouped and removed


def torch_pruning() -> Any:
    """The ``torch_pruning`` module, or a one-line :class:`PofError` saying how to get it."""
    return require("torch_pruning", "channel pruning (Torch-Pruning)")


def default_example(model: nn.Module) -> Tensor:
    """A dummy input: batch 1 at 32x32 with the first layer's input channels."""
    first = next((m for m in model.modules() if isinstance(m, PRUNABLE)), None)
    if first is None:
        raise PofError(f"{type(model).__name__} has no Conv2d/Linear layer to prune")
    if isinstance(first, nn.Linear):
        return torch.zeros(1, first.in_features)
    return torch.zeros(1, first.in_channels, 32, 32)


def build_graph(model: nn.Module, example: Tensor) -> Any:
    """Torch-Pruning's dependency graph of ``model`` traced on ``example`` (eval mode, so
    BatchNorm statistics stay as they are); a tracing failure is a one-line PofError."""
    tp = torch_pruning()
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example.to(model_device(model)), verbose=False)
    except Exception as e:  # noqa: BLE001 - any tracing failure is the model's, for the user
        msg = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise PofError(f"Torch-Pruning cannot trace {type(model).__name__} "
                       f"({type(e).__name__}: {msg}); pass example_inputs= of the right "
                       "shape, or prune this model unstructured") from None
    finally:
        model.train(was)


def channel_groups(
    model: nn.Module,
    example_inputs: Tensor | None = None,
    exclude: Patterns = None,
) -> ChannelPlan:
    """Trace ``model`` with Torch-Pruning and list its prunable channel groups.

    The last Conv2d/Linear (the classifier) keeps its outputs; ``exclude`` patterns (by
    default those of the selection recorded on the model) keep the output channels of the
    layers they match, and so of their whole group. ``example_inputs`` defaults to a zero
    batch of one 32x32 input. Raises :class:`PofError` naming a layer Torch-Pruning did not
    see being called, or a grouped (not depthwise) conv.
    """
    torch_pruning()  # a clear error before any work
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE)]
    if not layers:
        raise PofError(f"{type(model).__name__} has no Conv2d/Linear layer to prune")
    if exclude is None:
        sel = recorded_selection(model)
        exclude = sel.exclude if sel is not None else ()
    pats = as_patterns(exclude)
    for p in pats:
        if not any(name_matches(n, p) for n, _ in layers):
            raise PofError(f"exclude pattern {p!r} matches no Conv2d/Linear layer")
    ignored = [layers[-1][1]] + [m for n, m in layers if any(name_matches(n, p) for p in pats)]
    example = default_example(model) if example_inputs is None else example_inputs
    dg = build_graph(model, example)
    for n, m in layers:
        if m not in dg.module2node:
            raise PofError(f"layer {n!r} is not called as a module in the traced forward "
                           "(its weight used functionally?); Torch-Pruning cannot group its "
                           "channels")
    names = {m: n for n, m in model.named_modules()}
    groups, tracer_groups = [], []
    for grp in dg.get_all_groups(ignored_layers=ignored, root_module_types=PRUNABLE):
        g = _group(grp, names, dg)
        if g.consumers:
            groups.append(g)
            tracer_groups.append(grp)
    if not groups:
        raise PofError(f"{type(model).__name__}: no prunable channel group found")
    return ChannelPlan(groups, example.detach().cpu(), tracer_groups)


def _group(grp: Any, names: dict[nn.Module, str], dg: Any) -> ChannelGroup:
    """One Torch-Pruning group as a :class:`ChannelGroup`: its root and consumers."""
    g = ChannelGroup(names[grp[0].dep.target.module], len(grp[0].idxs))
    for item in grp:
        mod, handler = item.dep.target.module, item.dep.handler
        if not (isinstance(mod, PRUNABLE) and dg.is_in_channel_pruning_fn(handler)):
            continue
        if isinstance(mod, nn.Conv2d) and mod.groups > 1:
            if mod.groups == mod.in_channels == mod.out_channels:
                continue  # depthwise: carries the channel, its consumer judges it
            raise PofError(f"layer {names[mod]!r} is a grouped conv (groups={mod.groups}); "
                           "channel pruning supports depthwise and dense convs only")
        pairs = g.consumers.setdefault(names[mod], [])
        pairs += list(zip(item.idxs, item.root_idxs, strict=True))
    return g


def magnitude_scores(plan: ChannelPlan) -> list[Tensor]:
    """Torch-Pruning's group L2 magnitude of each group's channels (the usual baseline)."""
    imp = torch_pruning().importance.GroupMagnitudeImportance(p=2)
    with torch.no_grad():
        return [imp(g).detach().double().cpu() for g in plan.tracer_groups]
