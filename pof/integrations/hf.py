"""Hugging Face ``Trainer`` with a pof method: ``PofTrainer(..., pof_sparsity=0.7)``.

The loss the Trainer back-propagates becomes the method's: ``task loss + penalty`` (with a
linear warm-up over optimizer steps) for one target; for a range (``pof_sparsity="0.3:0.9"``)
also the pruned subnetworks' loss, on half of each batch, with in-place distillation if
asked (:class:`pof.OnTheFly`); any :mod:`pof.methods` object through ``pof_method``.
``pof_penalty`` and ``pruned_energy`` join the training logs; ``pof_prune="mean"`` or
``"zero"`` prunes the model when ``train()`` returns (a range at ``pof_prune_at``).
Saving: after ``pof.remove`` with mean recovery the folded layers hold means a plain
``transformers`` class does not know, so ``save_pretrained`` refuses in one line; use
``pof.save`` / ``pof.load(path, model=...)`` (exact), or prune with ``"zero"`` fill.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import Trainer

from ..errors import PofError
from ..methods import Method
from .driver import Driver, make_method


class PofTrainer(Trainer):
    """``transformers.Trainer`` that trains with a pof method.

    Args (besides the Trainer's): ``pof_sparsity`` (a target in [0, 1) or a range
    ``"lo:hi"``), or ``pof_method`` (any :mod:`pof.methods` object built on the model, e.g.
    ``pof.GMP(model, 0.7, total_steps)``); ``pof_weight``, ``pof_warmup_steps``,
    ``pof_form`` (weight and form default to the measured ones); ``pof_prune`` (None,
    "zero" or "mean": prune when training ends) at ``pof_prune_at`` (one target: the
    target; a range: required); ``pof_kwargs``: more options of the method
    (:class:`pof.OneTarget` / :class:`pof.OnTheFly`: ``distill``, ``exclude``,
    ``scope``, ...). Every argument is checked here; the model goes on the unit sphere
    here, before the optimizer exists.
    """

    def __init__(self, *args: Any, pof_sparsity: Any = None, pof_method: Method | None = None,
                 pof_weight: float | None = None, pof_warmup_steps: int = 0,
                 pof_form: str | None = None, pof_prune: str | None = None,
                 pof_prune_at: float | None = None, pof_kwargs: dict | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.optimizer is not None:
            raise PofError("PofTrainer creates the optimizer after putting the model on the "
                           "sphere; do not pass optimizers=")
        opts = {} if pof_method is not None else {
            "weight": pof_weight, "form": pof_form, "warmup_steps": pof_warmup_steps,
            **(pof_kwargs or {})}
        method = make_method(self.model, pof_sparsity, pof_method, **opts)
        self.pof = Driver(method, pof_prune, pof_prune_at)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any],
                     return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        if not model.training:  # evaluation calls this too
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        self.pof.sync(self.state.global_step)

        def run(batch: dict[str, Any], m: nn.Module) -> tuple[Any, Any]:
            n = num_items_in_batch if batch is inputs else None  # a part: its own mean
            loss, out = super(PofTrainer, self).compute_loss(
                m, batch, return_outputs=True, num_items_in_batch=n)
            return out, loss

        scale = 1.0
        if self._loss_is_scaled(num_items_in_batch):  # the Trainer will not divide it
            scale = 1.0 / getattr(self, "current_gradient_accumulation_steps",
                                  self.args.gradient_accumulation_steps)
        out, loss = self.pof.method.step_loss(run, inputs, model, scale)
        self.pof.record()
        return (loss, out) if return_outputs else loss

    def _loss_is_scaled(self, num_items_in_batch: Any) -> bool:
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = (getattr(self, "model_accepts_loss_kwargs", False)
                      and num_items_in_batch is not None) or self.compute_loss_func is not None
        return bool(scaled)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs or "train_loss" in logs:  # training log lines and the summary
            logs.update(self.pof.logs())
        super().log(logs, *args, **kwargs)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        result = super().train(*args, **kwargs)
        self.pof.finish(self.model, self.state.global_step)
        return result
