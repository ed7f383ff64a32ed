"""Hugging Face ``Trainer`` with the pof penalty: ``PofTrainer(..., pof_sparsity=0.7)``.

The loss the Trainer back-propagates becomes ``task loss + penalty`` (with a linear
warm-up over optimizer steps); ``pof_penalty`` and ``pruned_energy`` join the training
logs; ``pof_prune="mean"`` or ``"zero"`` prunes the model when ``train()`` returns.
Note: a pruned model carries pof parametrizations; for ``save_pretrained`` make it
permanent with ``pof.remove(model)`` after ``pof_prune="zero"`` (mean recovery adds
folded layers that plain ``transformers`` classes do not have).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import Trainer

from ..errors import PofError
from .schedule import ScheduledPenalty


class PofTrainer(Trainer):
    """``transformers.Trainer`` that adds the pof penalty to its loss.

    Args (besides the Trainer's): ``pof_sparsity`` (target, in [0, 1)), ``pof_weight``,
    ``pof_warmup_steps``, ``pof_form`` ("sine" or "energy"; weight and form default to
    the measured ones, :func:`pof.core.penalty.default_form_weight`), ``pof_prune``
    (None, "zero" or "mean": prune when training ends) and ``pof_kwargs`` (more
    :class:`~pof.integrations.schedule.ScheduledPenalty` options: ``sphere``, ``exclude``,
    ``scope``, ...). The model goes on the unit sphere here, before the optimizer exists.
    """

    def __init__(self, *args: Any, pof_sparsity: float, pof_weight: float | None = None,
                 pof_warmup_steps: int = 0, pof_form: str | None = None,
                 pof_prune: str | None = None, pof_kwargs: dict | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.optimizer is not None:
            raise PofError("PofTrainer creates the optimizer after putting the model on the "
                           "sphere; do not pass optimizers=")
        self.pof = ScheduledPenalty(self.model, pof_sparsity, pof_weight, pof_warmup_steps,
                                    pof_form, pof_prune, **(pof_kwargs or {}))
        self._pof_sum, self._pof_count = 0.0, 0

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any],
                     return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                   num_items_in_batch=num_items_in_batch)
        if not model.training:  # evaluation calls this too
            return out
        loss, outputs = out if return_outputs else (out, None)
        pen = self.pof(self.state.global_step)
        if self._loss_is_scaled(num_items_in_batch):  # the Trainer will not divide it
            pen = pen / getattr(self, "current_gradient_accumulation_steps",
                                self.args.gradient_accumulation_steps)
        self._pof_sum += self.pof.last
        self._pof_count += 1
        loss = loss + pen.to(loss.device)
        return (loss, outputs) if return_outputs else loss

    def _loss_is_scaled(self, num_items_in_batch: Any) -> bool:
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = (getattr(self, "model_accepts_loss_kwargs", False)
                      and num_items_in_batch is not None) or self.compute_loss_func is not None
        return bool(scaled)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs or "train_loss" in logs:  # training log lines and the summary
            if self._pof_count:
                logs["pof_penalty"] = self._pof_sum / self._pof_count
            logs["pruned_energy"] = self.pof.pruned_energy()
            self._pof_sum, self._pof_count = 0.0, 0
        super().log(logs, *args, **kwargs)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        result = super().train(*args, **kwargs)
        self.pof.finish(self.model)
        return result
