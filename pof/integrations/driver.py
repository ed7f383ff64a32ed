"""What Hugging Face and Lightning share: a training method driven by another loop's step
count, its arguments checked when it is built, and the prune when training ends."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ..core.masks import check_choice, check_range
from ..core.parametrizations import RECOVER
from ..core.penalty import FORMS, PrunePenalty
from ..core.prune import prune
from ..core.subnet import SAMPLES
from ..errors import PofError
from ..methods import Method, OneTarget, OnTheFly


def make_method(model: nn.Module, sparsity: Any = None, method: Method | None = None,
                **kwargs: Any) -> Method:
    """``method`` as given, or the pof method for ``sparsity``: :class:`pof.OneTarget` for
    one number, :class:`pof.OnTheFly` for a range ``(lo, hi)`` / ``"lo:hi"``; ``kwargs`` go
    to its constructor (``weight``, ``form``, ``warmup_steps``, ``distill``, ...)."""
    if method is not None:
        if sparsity is not None or kwargs:
            raise PofError("give a method or a sparsity (and its options), not both")
        if not isinstance(method, Method):
            raise PofError(f"method must be a pof.methods.Method, got {type(method).__name__}")
        return method
    if sparsity is None:
        raise PofError("give a sparsity (a number in [0, 1) or a range lo:hi) or a method")
    rng = check_range(sparsity)
    check_options(**kwargs)
    return OnTheFly(model, rng, **kwargs) if isinstance(rng, tuple) else \
        OneTarget(model, rng, **kwargs)


def check_options(**opts: Any) -> None:
    """Check a pof method's options before the method can be built (names and values)."""
    known = (set(inspect.signature(OnTheFly).parameters)
             | set(inspect.signature(PrunePenalty).parameters)) - {"model", "sparsity"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise PofError(f"unknown pof option(s) {', '.join(unknown)}; known: "
                       f"{', '.join(sorted(known))}")

    def number(name: str, lo: float, hi: float = float("inf"), integer: bool = False) -> None:
        v = opts.get(name)
        if v is None and name == "weight":
            return
        ok = not isinstance(v, bool) and isinstance(v, int if integer else int | float)
        if not ok or not lo <= v <= hi:
            kind = "a whole number" if integer else "a number"
            raise PofError(f"{name} must be {kind} in [{lo:g}, {hi:g}], got {v!r}")

    for name, lo, hi, integer in (("weight", 0, float("inf"), False),
                                  ("warmup_steps", 0, float("inf"), False),
                                  ("distill", 0, 1, False), ("subnets", 1, 8, True),
                                  ("every", 1, float("inf"), True)):
        if name in opts:
            number(name, lo, hi, integer)
    for name, choices in (("form", FORMS), ("sample", SAMPLES), ("recover", RECOVER)):
        if opts.get(name) is not None:
            check_choice(name, opts[name], choices)


def check_prune(target: Any, prune: str | None, prune_at: float | None) -> float | None:
    """The sparsity to prune at when training ends (None: no prune), from a method's
    target (one number or a range) and the ``prune`` / ``prune_at`` arguments."""
    if prune is None:
        if prune_at is not None:
            raise PofError("prune_at needs prune ('zero' or 'mean')")
        return None
    check_choice("prune", prune, RECOVER)
    if not isinstance(target, tuple):
        return target if prune_at is None else check_range(prune_at)
    if prune_at is None:
        raise PofError(f"a range model ({target[0]:g}:{target[1]:g}) is pruned at the "
                       "sparsity you deploy: give prune_at")
    at = check_range(prune_at)
    if isinstance(at, tuple) or not target[0] <= at <= target[1]:
        raise PofError(f"prune_at must be one sparsity in the trained range "
                       f"{target[0]:g}:{target[1]:g}, got {prune_at!r}")
    return at


class Driver:
    """A method driven by a loop that counts optimizer steps itself (``global_step``).

    ``prune`` ("zero", "mean" or None) prunes when training ends at ``prune_at`` (one
    target: its sparsity by default; a range: required, inside the range); both are checked
    here, before any training.
    """

    def __init__(self, method: Method, prune: str | None = None,
                 prune_at: float | None = None) -> None:
        self.method, self.prune = method, prune
        target = getattr(method, "sparsity", None) if isinstance(method, OneTarget) else None
        if prune is not None and target is None:
            raise PofError(f"prune= prunes a pof method's model; {type(method).__name__} "
                           "has no pof target (GMP prunes as it trains)")
        self.prune_at = check_prune(target, prune, prune_at)
        self._sum, self._count = 0.0, 0

    def sync(self, global_step: int) -> None:
        """Tell the method about the optimizer steps taken since the last call."""
        while self.method.steps < global_step:
            self.method.after_step()

    def record(self) -> None:
        """Count the last step's regularizer in the mean that :meth:`logs` reports."""
        if self.method.last_regularizer is not None:
            self._sum += self.method.last_regularizer
            self._count += 1

    def logs(self) -> dict[str, Any]:
        """``pof_penalty`` (mean since the last call) and the method's own numbers."""
        out = {k: v for k, v in self.method.logs().items() if not isinstance(v, list)}
        if self._count:
            out["pof_penalty"] = self._sum / self._count
        self._sum, self._count = 0.0, 0
        return out

    def finish(self, model: nn.Module, global_step: int) -> None:
        self.sync(global_step)
        self.method.finish()
        if self.prune is not None:
            pen = getattr(self.method, "penalty", None)
            scope = pen.scope if pen is not None else "layer"
            prune(model, self.prune_at, scope=scope, recover=self.prune)
