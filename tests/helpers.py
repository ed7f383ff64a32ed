"""Helpers the test packages share (tests/ is on the path through its conftest.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def one_line_exit_2(argv: list[str], capsys) -> str:
    """Run ``pof ARGV``; it must end with exit code 2 and one line on stderr (returned)."""
    from pof.cli import main

    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def train_steps(model: torch.nn.Module, method, x: torch.Tensor, y: torch.Tensor,
                steps: int, lr: float = 0.05) -> torch.Tensor:
    """``steps`` SGD steps of ``method`` on one batch; the last loss."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = method.loss(x, y, F.cross_entropy)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step()
    return loss
