"""Progress of a training run between its epoch records.

Every ``log_every`` steps (and at a ``--max-steps`` stop) the main process appends a step
record to ``metrics.jsonl`` (``"kind": "step"``: the epoch's running loss, penalty and
accuracy, the learning rate, the method's logs) and, when the progress bar is off
because output is not a terminal, prints it as one line, so that a run under ``nohup``,
a scheduler or CI shows where it is. Epoch records (those with ``test_top1``) are
unchanged; a stop record (``"stopped": true``) is dropped when the run resumes, so a
resumed run's records equal an uninterrupted run's.
"""

from __future__ import annotations

import math
import time
from typing import Any

from .run_dir import append_metrics


class StepClock:
    """Wall time and steps since a run (or its resumption) started: rate and time left."""

    def __init__(self, step: int, now: float | None = None) -> None:
        self.step0, self.t0 = step, time.time() if now is None else now

    def elapsed(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.t0

    def left(self, step: int, total: int, now: float | None = None) -> float | None:
        """Seconds until step ``total`` at the rate so far (None before a step is done)."""
        done, t = step - self.step0, self.elapsed(now)
        return None if done <= 0 or t <= 0 else (total - step) * t / done


def due(step: int, every: int, max_steps: int | None) -> bool:
    """Whether step ``step`` gets a step record: every ``every`` steps, and at the stop."""
    return step % every == 0 or (max_steps is not None and step >= max_steps)


def step_record(step: int, steps_per_epoch: int, sums: dict[str, float], lr: float,
                elapsed: float, logs: dict[str, Any] | None = None,
                stopped: bool = False) -> dict[str, Any]:
    """The ``metrics.jsonl`` record of step ``step``: the epoch's running averages so far."""
    n = max(sums["n"], 1)
    rec = {"kind": "step", "epoch": round(step / steps_per_epoch, 4), "step": step,
           "train_loss": sums["loss"] / n, "train_penalty": sums["penalty"] / n,
           "train_acc": sums["correct"] / n, "lr": lr, "time_s": round(elapsed, 1),
           **(logs or {})}
    if stopped:
        rec["stopped"] = True
    return rec


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (
        f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def step_line(rec: dict[str, Any], total: int, epochs: float,
              left: float | None = None) -> str:
    """One log line for a step record: where the run is, its running numbers, time."""
    step = rec["step"]
    head = (f"epoch {max(1, math.ceil(rec['epoch']))}/{math.ceil(epochs)} step {step}/{total} "
            f"({100 * step / total:.0f}%)")
    body = [f"loss {rec['train_loss']:.4f}", f"acc {rec['train_acc']:.4f}"]
    if rec.get("train_penalty"):
        body.append(f"penalty {rec['train_penalty']:.4g}")
    body.append(f"lr {rec['lr']:.4g}")
    when = f"{_duration(rec['time_s'])} elapsed"
    if left is not None and step < total:
        when += f", ~{_duration(left)} left"
    return f"{head}: {', '.join(body)} [{when}]"


def log_step(trainer: Any, bar: Any) -> dict[str, Any] | None:
    """Called by the training loop after each step: the step record when one is due
    (appended to ``metrics.jsonl`` and TensorBoard, printed when ``bar`` is off and
    progress is on); None otherwise and on other ranks than the main one."""
    cfg, step = trainer.cfg, trainer.step
    clock = trainer.__dict__.setdefault("_step_clock", StepClock(step - 1))
    if not trainer.main or not due(step, cfg.log_every, cfg.max_steps):
        return None
    stopped = step % cfg.log_every != 0  # due only because max_steps stops the run here
    rec = step_record(step, trainer.steps_per_epoch, trainer.sums, trainer.lr,
                      clock.elapsed(), trainer.method.logs(), stopped)
    trainer.metrics.append(rec)
    append_metrics(trainer.out / "metrics.jsonl", rec)
    if trainer.tb is not None:
        for k, v in rec.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                trainer.tb.add_scalar(f"step/{k}", v, step)
    if cfg.progress and bar.disable:  # a terminal has the bar; elsewhere, one line
        print(step_line(rec, trainer.total, cfg.epochs, clock.left(step, trainer.total)),
              flush=True)
    return rec
