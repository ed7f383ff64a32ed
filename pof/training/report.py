"""``report.md`` of a finished training run."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..core.sparsity import sparsity_report
from ..fileio import write_text
from .config import TrainConfig


def write_report(path: Path, cfg: TrainConfig, step: int, metrics: list[dict],
                 model: nn.Module) -> Path:
    """A short markdown summary: arm, length, final test accuracy, sparsity per layer."""
    last = metrics[-1] if metrics else {}
    lines = [f"# pof train: {cfg.model} on {cfg.data}", "",
             f"- penalty: {cfg.penalty} (sparsity target {cfg.sparsity})",
             f"- steps: {step}, epochs: {cfg.epochs}, seed: {cfg.seed}",
             f"- final test top-1: {100 * last.get('test_top1', float('nan')):.2f}%", "",
             "```", str(sparsity_report(model)), "```", ""]
    return write_text(path, "\n".join(lines))
