"""Lightning callback with the pof penalty: ``L.Trainer(callbacks=[PofCallback(0.7)])``.

The callback puts the module's weights on the unit sphere in ``setup`` (before
``configure_optimizers``), adds the penalty (with a linear warm-up over optimizer steps)
to the loss that ``training_step`` returns, logs ``pof_penalty`` and ``pruned_energy``,
and prunes when ``fit`` ends if asked. It needs automatic optimization; with manual
optimization add ``callback.pof(step)`` to your loss yourself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    import pytorch_lightning as pl

from ..errors import PofError
from .schedule import ScheduledPenalty


class PofCallback(pl.Callback):
    """Add the pof penalty to a LightningModule's training loss.

    Args: ``sparsity`` (target, in [0, 1)), ``weight``, ``warmup_steps``, ``form``
    ("sine" or "energy"; weight and form default to the measured ones), ``prune``
    (None, "zero" or "mean": prune when fit ends);
    other keyword arguments go to :class:`~pof.integrations.schedule.ScheduledPenalty`
    (``sphere``, ``exclude``, ``scope``, ...).
    """

    def __init__(self, sparsity: float, weight: float | None = None, warmup_steps: int = 0,
                 form: str | None = None, prune: str | None = None, **kwargs: Any) -> None:
        super().__init__()
        self._args = dict(sparsity=sparsity, weight=weight, warmup_steps=warmup_steps,
                          form=form, prune=prune, **kwargs)
        self.pof: ScheduledPenalty | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.pof is not None:
            return
        if not pl_module.automatic_optimization:
            raise PofError("PofCallback needs automatic optimization; with manual "
                           "optimization add callback.pof(step) to your loss")
        self.pof = ScheduledPenalty(pl_module, **self._args)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step_fn = pl_module.training_step
        pof = self.pof

        def training_step(*args: Any, **kwargs: Any):
            out = step_fn(*args, **kwargs)
            if out is None:  # the step was skipped
                return out
            pen = pof(trainer.global_step)
            pl_module.log("pof_penalty", pof.last, on_step=True, on_epoch=False)
            if trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
                pl_module.log("pruned_energy", pof.pruned_energy(), on_step=True,
                              on_epoch=False)
            if isinstance(out, Mapping):
                return {**out, "loss": out["loss"] + pen}
            return out + pen

        pl_module.training_step = training_step  # an instance attribute, removed at the end

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.__dict__.pop("training_step", None)
        if self.pof is not None:
            self.pof.finish(pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        pl_module.__dict__.pop("training_step", None)
