"""``TrainConfig``: every value a training run needs, each read and checked in one place.

Each field carries its help text and a :class:`Kind` that parses it from a command-line
flag and checks its type and range; ``__post_init__`` checks every field (a recipe, the
CLI and library callers all go through it), so nothing downstream checks again.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.gmp import check_schedule
from ..core.masks import parse_nm
from ..core.penalty import FORMS, default_form_weight
from ..core.subnet import SAMPLES
from ..errors import ConfigError
from .kinds import Bool, Kind, Mapping, Model, Number, Pattern, Sparsity, Str, StrList

PENALTIES = ("none", "pof", "l1", "gmp", "cram")
SUBNETS = ("auto", "none", "split", "extra")
SCHEDULES = ("cosine", "onecycle", "constant")
STRUCTURES = ("weight", "channel")
_DEFAULTS = "the {} form at {:g} for one target, the {} form at {:g} for a range".format(
    *default_form_weight(0.5), *default_form_weight((0.3, 0.9)))


def _f(default: Any, kind: Kind, help: str) -> Any:  # noqa: A002 - argparse's word
    """A config field with its :class:`Kind` and help text (lists/dicts copied per config)."""
    meta = {"kind": kind, "help": help}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


DEVICE = r"auto|cpu|cuda(:\d+)?|mps"
_POS = Number(lo=0, lo_open=True)
_NONNEG = Number(lo=0)


@dataclass
class TrainConfig:
    """Everything a run needs; written to ``config.yaml`` in the run folder."""

    model: str = _f("resnet20", Model(), "registered model name (see pof.list_models())")
    data: str = _f("digits", Str(), "digits, an ImageFolder dir or .tar.gz, a CIFAR pickle "
                   "dir, or an IDX dir")
    out: str = _f("runs/train", Str(), "run folder (config, metrics, checkpoints, report)")
    model_kwargs: dict = _f({}, Mapping(), "keyword arguments of the model constructor")
    init: str | None = _f(None, Str(optional=True), "start from these weights: a pof "
                          "checkpoint, .safetensors or .pt/.pth state_dict")
    epochs: float = _f(10.0, _POS, "training length in epochs (fractions allowed)")
    batch_size: int = _f(128, Number(integer=True, lo=1), "global batch size (split over DDP "
                         "ranks)")
    lr: float = _f(0.1, _POS, "peak learning rate")
    momentum: float = _f(0.9, Number(lo=0, hi=1, hi_open=True), "SGD momentum")
    nesterov: bool = _f(True, Bool(), "Nesterov momentum (when momentum > 0)")
    weight_decay: float = _f(5e-4, _NONNEG, "SGD weight decay")
    schedule: str = _f("cosine", Str(SCHEDULES), "learning-rate schedule: cosine, onecycle "
                       "or constant")
    warmup_epochs: float = _f(0.0, _NONNEG, "linear learning-rate warm-up (onecycle: the "
                              "rise to the peak; default 30%% of the run)")
    label_smoothing: float = _f(0.0, Number(lo=0, hi=1, hi_open=True), "cross-entropy label "
                                "smoothing, in [0, 1)")
    penalty: str = _f("none", Str(PENALTIES), "training method: none (standard), pof "
                      "(sphere + pruning penalty), l1, gmp (gradual magnitude pruning) or cram "
                      "(CrAM-style loss at a pruned point)")
    sparsity: float | list[float] | str = _f(0.5, Sparsity(), "target sparsity, a fraction "
                                             "in [0, 1); pof and cram also take a range lo:hi "
                                             "(one model for every sparsity in it)")
    penalty_weight: float | None = _f(None, Number(lo=0, optional=True), "multiplier of "
                                      "the pof penalty (0: sphere (+ subnet) without the "
                                      f"penalty; default: {_DEFAULTS})")
    penalty_warmup: float = _f(0.0, _NONNEG, "epochs over which the penalty weight ramps up "
                               "from 0")
    penalty_ramp: float = _f(0.0, Number(lo=0, hi=1), "pof for one target: the fraction of "
                             "training over which the penalty's target rises from 0 along "
                             "GMP's cubic schedule (0: the target from the start)")
    penalty_scope: str = _f("layer", Str(("layer", "global")), "layer or global")
    penalty_refresh: int = _f(50, Number(integer=True, lo=1), "re-select the to-be-pruned "
                              "weights every this many steps")
    penalty_beta: float = _f(0.1, _NONNEG, "weight of the margin term that keeps kept "
                             "weights away from zero")
    penalty_form: str | None = _f(None, Str(FORMS, optional=True), "energy (pruned-energy "
                                  "fraction) or sine (its square root, for high sparsity); "
                                  f"default: {_DEFAULTS}")
    penalty_levels: int = _f(4, Number(integer=True, lo=2), "pof with a sparsity range: "
                             "nested pruned sets the penalty acts on")
    structure: str = _f("weight", Str(STRUCTURES), "pof penalty on single weights (weight) "
                        "or whole channels (channel; sparsity = fraction of each channel "
                        "group, a range lo:hi = one model for every width in it), for `pof "
                        "prune --structure`")
    pattern: str | None = _f(None, Pattern(), "pof penalty for an N:M prune (e.g. 2:4; the "
                             "sparsity is then 1 - N/M)")
    subnet: str = _f("auto", Str(SUBNETS), "loss of the network pruned at a sampled "
                     "sparsity: auto (split for a pof range, extra for cram), none, split (half "
                     "of each batch) or extra (a second pass, twice the cost)")
    subnet_every: int = _f(1, Number(integer=True, lo=1), "take the pruned-subnetwork term "
                           "on every this many steps (the steps between are plain steps)")
    subnet_distill: float = _f(0.0, Number(lo=0, hi=1), "in-place distillation: weight of "
                               "the dense network's own (detached) outputs as the pruned "
                               "subnetworks' target, the rest on the labels (0: labels only, "
                               "1: dense outputs only)")
    subnet_sample: str = _f("sandwich", Str(SAMPLES), "how the pruned sparsity is drawn: "
                            "sandwich (the top of the range every other step, else uniform), "
                            "uniform, or high (more draws toward the top)")
    subnet_count: int = _f(1, Number(integer=True, lo=1, hi=8), "pruned subnetworks per "
                           "step, each on its share of the pruned part of the batch (with "
                           "sandwich and more than 1: the top of the range every step)")
    subnet_teacher: str = _f("self", Str(("self", "init")), "whose outputs the pruned "
                             "subnetworks distil (with subnet_distill > 0): self (the dense "
                             "network being trained, in place) or init (the --init model, "
                             "frozen)")
    gmp_start: float = _f(0.0, Number(lo=0, hi=1), "gmp: fraction of training where pruning "
                          "starts")
    gmp_end: float = _f(0.75, Number(lo=0, hi=1), "gmp: fraction of training where the "
                        "target is reached (masks fixed after)")
    gmp_every: int = _f(100, Number(integer=True, lo=1), "gmp: recompute the masks every "
                        "this many steps")
    l1_weight: float = _f(1e-5, _NONNEG, "L1 regularisation weight (penalty l1)")
    sphere: bool | None = _f(None, Bool(optional=True), "put weights on the unit sphere "
                             "(default: on for penalty pof)")
    cosine: bool = _f(False, Bool(), "cosine layers: also normalise each receptive field of "
                      "the input")
    exclude: list[str] = _f([], StrList(), "comma-separated layer-name patterns pof leaves "
                            "alone")
    seed: int = _f(0, Number(integer=True, lo=0), "random seed (weights, data order, "
                   "augmentation)")
    ckpt_every: int = _f(500, Number(integer=True, lo=1), "write last.safetensors every "
                         "this many steps (and at each epoch end)")
    amp: bool = _f(True, Bool(), "bfloat16 autocast on GPU")
    channels_last: bool = _f(True, Bool(), "channels-last memory format (faster "
                             "convolutions)")
    workers: int = _f(4, Number(integer=True, lo=0), "data-loader worker processes "
                      "(streaming data sets only)")
    tensorboard: bool = _f(False, Bool(), "also log to OUT/tb (needs the tensorboard "
                           "package)")
    progress: bool = _f(True, Bool(), "show progress: a bar on a terminal, else one line "
                        "every log_every steps; and a line per epoch")
    log_every: int = _f(50, Number(integer=True, lo=1), "append a step record to "
                        "metrics.jsonl every this many steps (and at a max_steps stop)")
    max_steps: int | None = _f(None, Number(integer=True, lo=1, optional=True), "stop after "
                               "this many steps in total (writes a checkpoint)")
    device: str = _f("auto", Str(pattern=DEVICE, what="auto, cpu, cuda, cuda:N or mps"),
                     "auto, cpu, cuda, cuda:N or mps")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, f.metadata["kind"].check(f.name, getattr(self, f.name)))
        if isinstance(self.sparsity, list) and self.penalty in ("gmp", "l1", "none"):
            raise ConfigError(f"a sparsity range needs penalty pof or cram, not "
                              f"{self.penalty!r}; GMP trains for one target sparsity")
        if self.penalty == "gmp":
            check_schedule(self.gmp_start, self.gmp_end, self.gmp_every)
        if self.penalty_ramp and (self.penalty != "pof" or isinstance(self.sparsity, list)
                                  or self.pattern is not None or self.structure != "weight"
                                  or self.penalty_weight == 0):
            raise ConfigError("penalty_ramp schedules the pof penalty's single weight-level "
                              "target: penalty pof, one sparsity, a penalty weight > 0, no "
                              "pattern or structure")
        changed = [k for k, v in (("subnet_every", 1), ("subnet_distill", 0.0),
                                  ("subnet_sample", "sandwich"), ("subnet_count", 1),
                                  ("subnet_teacher", "self"))
                   if getattr(self, k) != v]
        if self.subnet_teacher == "init" and not (self.init and self.subnet_distill):
            raise ConfigError("subnet_teacher init distils the --init model: give init and "
                              "subnet_distill > 0")
        if changed and self.subnet_mode == "none":
            raise ConfigError(f"{changed[0]} needs a pruned-subnetwork term: a pof sparsity "
                              "range, cram, or subnet split/extra")
        self._check_shape()

    def resolved(self) -> TrainConfig:
        """This config with every ``None``-means-measured-default value made concrete (the
        penalty's form and weight for this sparsity): what a run records and uses."""
        form, weight = default_form_weight(self.sparsity)
        return dataclasses.replace(
            self, penalty_form=form if self.penalty_form is None else self.penalty_form,
            penalty_weight=weight if self.penalty_weight is None else self.penalty_weight)

    @property
    def subnet_mode(self) -> str:
        """The pruned-subnetwork term this run trains: ``auto`` resolved to split (a pof
        range), extra (cram) or none."""
        if self.subnet != "auto":
            return self.subnet
        ranged = isinstance(self.sparsity, list)
        return {"cram": "extra", "pof": "split" if ranged else "none"}.get(self.penalty, "none")

    def _check_shape(self) -> None:
        """``structure`` channel (one target or a range of channel fractions) and ``pattern``
        N:M (one target) shape the pof penalty."""
        shaped = [k for k in ("structure", "pattern")
                  if getattr(self, k) not in (None, "weight")]
        if not shaped:
            return
        if len(shaped) == 2:
            raise ConfigError("structure channel and pattern N:M exclude each other: an N:M "
                              "pattern prunes single weights")
        if self.penalty != "pof":
            raise ConfigError(f"structure channel / pattern N:M shape the pof penalty: use "
                              f"penalty pof, not {self.penalty!r}")
        if isinstance(self.sparsity, list) and self.pattern is not None:
            raise ConfigError("pattern N:M trains for one sparsity, not a range")
        if self.pattern is not None:
            n, m = parse_nm(self.pattern)
            self.sparsity = 1 - n / m  # the pattern fixes it

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> TrainConfig:
        """A config from plain values; unknown keys are an error naming ``source``."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: a config must be a mapping of key: value")
        names = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise ConfigError(f"{source}: unknown config key(s): {', '.join(map(str, bad))} "
                              f"(known: {', '.join(sorted(names))})")
        try:
            return cls(**d)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a recipe; YAML errors and bad values are one-line :class:`ConfigError`\\ s."""
        import yaml

        p = Path(path)
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not a text (UTF-8) config file: byte {e.start} is "
                              f"{e.object[e.start:e.start + 1]!r}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None
        return cls.from_dict(d, str(p))


def field_kind(name: str) -> Kind:
    """The :class:`Kind` of config field ``name``."""
    return next(f.metadata["kind"] for f in dataclasses.fields(TrainConfig) if f.name == name)
