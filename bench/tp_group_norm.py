"""Torch-Pruning's group-norm pruner (DepGraph, CVPR 2023) as a baseline stage.

Continues a pof checkpoint with Torch-Pruning's ``GroupNormPruner`` sparsity
regularisation (``pruner.regularize`` after each backward pass) for ``--epochs``, prunes
``--sparsity`` of every channel group with its group-norm importance (``pruner.step``) and
writes a pof checkpoint of the smaller model (its widths recorded), ready for
``pof finetune`` and ``pof eval``. bench/structured_range.py runs it as its tpgn arm.

    python bench/tp_group_norm.py --init PRE.safetensors --data DATA --sparsity 0.5 \\
        --epochs 2 --out runs/x/tpgn
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", required=True, help="a pof checkpoint (a plain, dense model)")
    p.add_argument("--data", required=True)
    p.add_argument("--sparsity", type=float, required=True, help="fraction of each group")
    p.add_argument("--epochs", type=float, required=True, help="regularised training")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--reg", type=float, default=5e-4, help="GroupNormPruner's reg")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    out = args.out / "pruned.safetensors"
    if out.is_file():
        print(f"# done already: {out}")
        return
    import torch_pruning as tp

    from pof.core.widths import record_widths
    from pof.data import load_dataset, make_loader
    from pof.structured.graph import channel_groups
    from pof.training.checkpoint import model_from_checkpoint, save_checkpoint
    from pof.training.evaluate import evaluate, held_out_split

    torch.manual_seed(args.seed)
    model, meta = model_from_checkpoint(args.init)
    data = meta.get("data") or {}
    stats = (tuple(data["mean"]), tuple(data["std"])) if "mean" in data else None
    ds = load_dataset(args.data, "train", stats=stats)
    example = torch.zeros(1, *ds.spec.image_size)
    ignored = ignored_layers(model)
    channel_groups(model, example)  # a clear error for a model pof cannot group
    pruner = tp.pruner.GroupNormPruner(
        model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
        reg=args.reg, pruning_ratio=args.sparsity, ignored_layers=ignored)
    steps_per_epoch = len(make_loader(ds, args.batch_size, train=True, seed=args.seed))
    total = max(1, round(args.epochs * steps_per_epoch))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    step, epoch = 0, 0
    model.train()
    while step < total:
        for x, y in make_loader(ds, args.batch_size, train=True, seed=args.seed, epoch=epoch):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            pruner.regularize(model)  # the group-norm sparsity gradient
            opt.step()
            sched.step()
            step += 1
            if step >= total:
                break
        epoch += 1
    test = make_loader(held_out_split(args.data, stats=stats), 256, train=False)
    before = evaluate(model, test)["top1"]
    n0 = sum(q.numel() for q in model.parameters())
    pruner.step()
    record_widths(model)
    after = evaluate(model, test)["top1"]
    n1 = sum(q.numel() for q in model.parameters())
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in meta.items() if k in ("arch", "data", "config")}
    meta["pruned"] = {"sparsity": args.sparsity, "structure": "channel",
                      "importance": "tp-group-norm", "source": str(args.init)}
    save_checkpoint(out, model, meta)
    (args.out / "result.json").write_text(json.dumps({
        "top1_regularised": 100 * before, "top1_pruned": 100 * after, "params": n1,
        "params_before": n0, "steps": total}) + "\n")
    print(f"top1 regularised {100 * before:.2f}%  pruned {100 * after:.2f}%  "
          f"({n0:,} -> {n1:,} parameters); wrote {out}")


def ignored_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers whose outputs stay whole, as :func:`pof.channel_groups` decides: the
    classifier and those the model's recorded selection excludes (the same groups)."""
    from pof.core.selection import name_matches, recorded_selection
    from pof.structured.graph import PRUNABLE

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE)]
    sel = recorded_selection(model)
    pats = sel.exclude if sel is not None else ()
    return [layers[-1][1]] + [m for n, m in layers if any(name_matches(n, q) for q in pats)]


if __name__ == "__main__":
    main()
