"""Lightning callback with a pof method: ``L.Trainer(callbacks=[PofCallback(0.7)])``.

The callback builds the method in ``setup`` (the module's weights on the unit sphere,
before ``configure_optimizers``) and wraps ``training_step``: one target adds the penalty
(with a linear warm-up over optimizer steps) to the loss it returns; a range
(``PofCallback("0.3:0.9")``) also runs ``training_step`` on half of the batch with the
network pruned at sampled sparsities (:class:`pof.OnTheFly`; in-place distillation needs
``training_step`` to call the module itself, ``self(x)``, so the outputs can be seen).
It logs ``pof_penalty`` and ``pruned_energy`` and prunes when ``fit`` ends if asked. It
needs automatic optimization.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    import pytorch_lightning as pl

from torch import Tensor

from ..core.masks import check_range
from ..errors import PofError
from ..methods import Method
from .driver import Driver, check_options, check_prune, make_method


class PofCallback(pl.Callback):
    """Train a LightningModule with a pof method.

    Args: ``sparsity`` (a target in [0, 1) or a range ``"lo:hi"``) or ``method`` (a
    ``callable(module) -> pof.methods.Method``, e.g. ``lambda m: pof.GMP(m, 0.7, 1000)``,
    built in ``setup``); ``weight``, ``warmup_steps``, ``form`` (weight and form default to
    the measured ones); ``prune`` (None, "zero" or "mean": prune when fit ends) at
    ``prune_at`` (a range: required); other keyword arguments go to the method
    (:class:`pof.OneTarget` / :class:`pof.OnTheFly`: ``distill``, ``exclude``, ...).
    Values are checked here, before training.
    """

    def __init__(self, sparsity: Any = None, weight: float | None = None,
                 warmup_steps: int = 0, form: str | None = None, prune: str | None = None,
                 prune_at: float | None = None, method: Any = None, **kwargs: Any) -> None:
        super().__init__()
        if method is not None and not callable(method):
            raise PofError("method must be a callable(module) -> pof.methods.Method")
        if method is None:  # check the values now; the method is built in setup
            if sparsity is None:
                raise PofError("give a sparsity (a number in [0, 1) or a range lo:hi) or "
                               "a method")
            check_prune(check_range(sparsity), prune, prune_at)
            check_options(weight=weight, form=form, warmup_steps=warmup_steps, **kwargs)
        self._build = method or (lambda m: make_method(
            m, sparsity, weight=weight, form=form, warmup_steps=warmup_steps, **kwargs))
        self._prune = (prune, prune_at)
        self.pof: Driver | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.pof is not None:
            return
        if not pl_module.automatic_optimization:
            raise PofError("PofCallback needs automatic optimization")
        method = self._build(pl_module)
        if not isinstance(method, Method):
            raise PofError(f"method(module) must return a pof.methods.Method, got "
                           f"{type(method).__name__}")
        self.pof = Driver(method, *self._prune)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step_fn, drv = pl_module.training_step, self.pof
        seen: list[Any] = []
        hook = pl_module.register_forward_hook(lambda m, a, out: seen.append(out))
        self._hook = hook

        def run(batch: Any, module: Any, batch_idx: int, main: bool) -> tuple[Any, Tensor]:
            seen.clear()
            log = pl_module.__dict__.get("log")
            if not main:  # the extra passes do not log
                pl_module.log = lambda *a, **k: None
            try:
                out = step_fn(batch, batch_idx)
            finally:
                if not main:
                    if log is None:
                        pl_module.__dict__.pop("log", None)
                    else:
                        pl_module.log = log
            loss = out["loss"] if isinstance(out, Mapping) else out
            if not main and getattr(drv.method, "distill", 0) and not seen:
                raise PofError("in-place distillation needs the outputs: call the module "
                               "itself in training_step (self(x)), or distill=0")
            return (seen[-1] if seen else None), loss

        def training_step(batch: Any, batch_idx: int, *args: Any, **kwargs: Any):
            drv.sync(trainer.global_step)
            full: list[Any] = []

            def part(b: Any, m: Any) -> tuple[Any, Tensor]:
                res = run(b, m, batch_idx, main=not full)
                full.append(res)
                return res

            out, loss = drv.method.step_loss(part, batch, pl_module)
            drv.record()
            pl_module.log("pof_penalty", drv.method.last_regularizer or 0.0, on_step=True,
                          on_epoch=False)
            if trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
                for k, v in drv.method.logs().items():
                    if not isinstance(v, list):
                        pl_module.log(k, v, on_step=True, on_epoch=False)
            return loss

        pl_module.training_step = training_step  # an instance attribute, removed at the end

    def _unwrap(self, pl_module: pl.LightningModule) -> None:
        pl_module.__dict__.pop("training_step", None)
        hook = getattr(self, "_hook", None)
        if hook is not None:
            hook.remove()
            self._hook = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._unwrap(pl_module)
        if self.pof is not None:
            self.pof.finish(pl_module, trainer.global_step)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self._unwrap(pl_module)
