"""The interface every training method implements, and the batch helpers they share.

A method owns what it adds to plain training — a penalty, masks on a schedule, a pruned
subnetwork's loss — and nothing else: any loop (``pof train``, Hugging Face, Lightning,
your own) drives it the same way::

    method = pof.OnTheFly(model, (0.3, 0.9))          # prepares the model (sphere, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for x, y in loader:
        loss = method.loss(x, y, F.cross_entropy)   # the step's whole loss
        opt.zero_grad(); loss.backward(); opt.step()
        method.after_step()                         # schedules, masks, step count
    method.finish()                                 # e.g. GMP: masks made permanent

``state_dict()`` / ``load_state_dict()`` carry what a resumed run needs (tensors and plain
values); build the method on the model first, then load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

LossFn = Callable[[Any, Any], Tensor]


def call(model: nn.Module, inputs: Any) -> Any:
    """``model(inputs)``, or ``model(**inputs)`` for a mapping (a Hugging Face batch)."""
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


def logits_of(outputs: Any) -> Tensor:
    """The logits of a model's outputs: a tensor, or a Hugging Face output's ``logits``."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping) and "logits" in outputs:
        return outputs["logits"]
    return outputs.logits


def batch_size(batch: Any) -> int:
    """The number of examples in a batch (a tensor, or a mapping/sequence of them)."""
    if isinstance(batch, Tensor):
        return len(batch)
    items = batch.values() if isinstance(batch, Mapping) else batch
    return next(len(v) for v in items if isinstance(v, Tensor))


def sliced(batch: Any, start: int, stop: int) -> Any:
    """Examples ``start:stop`` of a batch: every tensor in it sliced along its first axis."""
    if isinstance(batch, Tensor):
        return batch[start:stop]
    if isinstance(batch, Mapping):
        return {k: sliced(v, start, stop) if isinstance(v, Tensor) else v
                for k, v in batch.items()}
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        return type(batch)(sliced(v, start, stop) if isinstance(v, Tensor) else v
                           for v in batch)
    return batch


class Method:
    """Standard training; the base every method extends.

    Subclasses override :meth:`regularizer` (a term added to the task loss),
    :meth:`forward_loss` (when the step runs more than one forward pass), :meth:`after_step`,
    :meth:`finish`, :meth:`logs` and the state methods.
    """

    name = "standard"

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.steps = 0  # optimizer steps taken
        self.last_regularizer: float | None = None  # the last step's term, for logging

    def forward_loss(self, inputs: Any, targets: Any, loss_fn: LossFn,
                     model: nn.Module | None = None) -> tuple[Any, Tensor]:
        """``(outputs, loss)`` of one batch: the task loss plus the method's terms.
        ``model`` is what runs the forward pass (e.g. a DDP wrapper of the model)."""
        def run(batch: tuple[Any, Any], m: nn.Module) -> tuple[Any, Tensor]:
            out = call(m, batch[0])
            return out, loss_fn(out, batch[1])

        return self.step_loss(run, (inputs, targets), model)

    def step_loss(self, run: Callable[[Any, nn.Module], tuple[Any, Tensor]], batch: Any,
                  model: nn.Module | None = None, reg_scale: float = 1.0
                  ) -> tuple[Any, Tensor]:
        """:meth:`forward_loss` for a loop that computes a batch's loss its own way:
        ``run(batch, model)`` returns ``(outputs, task loss)`` of any part of ``batch``
        (sliced along the first axis of every tensor in it); the method's term is added
        times ``reg_scale`` (e.g. 1 / gradient-accumulation steps where the loop does not
        divide the loss)."""
        out, loss = run(batch, model or self.model)
        return out, self.with_regularizer(loss, reg_scale)

    def loss(self, inputs: Any, targets: Any, loss_fn: LossFn,
             model: nn.Module | None = None) -> Tensor:
        """The step's loss (see :meth:`forward_loss`)."""
        return self.forward_loss(inputs, targets, loss_fn, model)[1]

    def regularizer(self) -> Tensor | None:
        """The term this step adds to a task loss (None: nothing)."""
        return None

    def with_regularizer(self, loss: Tensor, scale: float = 1.0) -> Tensor:
        """``loss`` + ``scale`` x :meth:`regularizer` (its value kept for logging)."""
        reg = self.regularizer()
        self.last_regularizer = None if reg is None else float(reg.detach())
        return loss if reg is None else loss + scale * reg.to(loss.device)

    def after_step(self) -> None:
        """Call after each optimizer step."""
        self.steps += 1

    def finish(self) -> None:
        """Call when training ends."""

    def logs(self) -> dict[str, Any]:
        """Numbers worth logging now (e.g. the pruned energy)."""
        return {}

    def to(self, device: Any) -> Method:
        """Move the method's own tensors (masks) to ``device``."""
        return self

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: tensors and plain values."""
        return {"steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = int(state.get("steps", self.steps))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps})"
