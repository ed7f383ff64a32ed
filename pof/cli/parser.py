"""The ``pof`` argument parser: every value is read and checked by its ``type=``.

Training flags come from :class:`~pof.training.config.TrainConfig`'s fields (their help
and :class:`~pof.training.config.Kind`); argparse errors are one line with exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from ..errors import PofError
from ..workflows.steps import RECAL_BATCH
from . import commands


class _Formatter(argparse.HelpFormatter):
    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, _Switch):  # --flag, --no-flag (a value is still accepted)
            return ", ".join(action.option_strings)
        return super()._format_action_invocation(action)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kw)

    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _arg(fn: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """An argparse ``type=`` that reports a PofError's own message."""
    def parse(text: str) -> Any:
        try:
            return fn(text)
        except PofError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = name
    return parse


def _sparsity(text: str) -> float:
    from ..core.masks import parse_sparsity

    return parse_sparsity(text)


def _pattern(text: str) -> str:
    from ..core.masks import parse_nm

    n, m = parse_nm(text)
    return f"{n}:{m}"


def _sparsities(text: str) -> list[float]:
    from ..core.masks import parse_sparsities

    return parse_sparsities(text)


def _round_tos(text: str) -> list[int]:
    from ..core.channels import round_to_list

    return round_to_list(text)


def _recovers(text: str) -> list[str]:
    from ..core.parametrizations import RECOVER

    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in RECOVER]
    if bad or not items:
        raise PofError(f"recover must be a comma-separated list of {', '.join(RECOVER)}, "
                       f"got {text!r}")
    return items


def _number(name: str, **kw: Any) -> Callable[[str], Any]:
    from ..training.kinds import Number

    kind = Number(**kw)
    return _arg(lambda text: kind.check(name, kind.parse(text)), name)


def _csv(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


# ``pof train --help`` in sections; a TrainConfig field missing here is listed under "other"
GROUPS: dict[str, tuple[str, ...]] = {
    "model and data": ("model", "data", "init", "workers"),
    "optimisation": ("epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay",
                     "schedule", "warmup_epochs", "label_smoothing"),
    "method": ("penalty", "penalty_weight", "penalty_warmup", "penalty_ramp",
               "penalty_refresh", "penalty_beta", "penalty_form", "penalty_levels", "subnet",
               "subnet_every", "subnet_distill", "subnet_sample", "subnet_count",
               "subnet_teacher", "gmp_start",
               "gmp_end", "gmp_every", "l1_weight", "sphere", "cosine"),
    "pruning": ("sparsity", "structure", "pattern", "penalty_scope", "exclude"),
    "run control": ("out", "seed", "max_steps", "ckpt_every", "device", "amp",
                    "channels_last"),
    "logging": ("progress", "log_every", "tensorboard"),
}
METHOD_PREFIXES = ("penalty_", "subnet_", "gmp_", "l1_")  # a new field's section: method
# flags `pof finetune` takes from TrainConfig: it trains the pruned model plainly, masks fixed
# (it skips these, and any field with a METHOD_PREFIXES prefix)
FINETUNE_SKIP = frozenset({
    "model", "out", "init", "penalty", "sphere", "cosine", "sparsity", "exclude",
    "penalty_weight", "penalty_warmup", "penalty_scope", "penalty_refresh", "penalty_beta",
    "penalty_form", "penalty_ramp", "penalty_levels", "l1_weight", "structure", "pattern",
    "subnet", "subnet_every", "subnet_distill", "subnet_sample", "subnet_count", "gmp_start",
    "gmp_end", "gmp_every"})


class _Switch(argparse.BooleanOptionalAction):
    """``--flag`` / ``--no-flag``; ``--flag true|false`` (and ``auto`` where the field
    allows it) still work, as recipes and scripts wrote them."""

    def __init__(self, option_strings: list[str], dest: str, parse: Callable[[str], Any],
                 **kw: Any) -> None:
        super().__init__(option_strings, dest, **kw)
        self.nargs, self.parse, self.metavar = "?", parse, "BOOL"  # (set here: newer Pythons
        # deprecate passing metavar to BooleanOptionalAction)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        negative = option_string is not None and option_string.startswith("--no-")
        if negative and values is not None:
            parser.error(f"{option_string} takes no value (use {option_string} or "
                         f"--{option_string[5:]} VALUE)")
        try:
            value = not negative if values is None else self.parse(values)
        except argparse.ArgumentTypeError as e:
            yes, no = self.option_strings
            parser.error(f"argument {yes}: {e} (a switch: {yes} or {no})")
        setattr(namespace, self.dest, value)



def _add_config_flags(p: argparse.ArgumentParser, skip: frozenset[str] = frozenset(),
                      shown: dict[str, str] | None = None) -> None:
    """One ``--flag`` per TrainConfig field in sections (:data:`GROUPS`); switches as
    ``--flag/--no-flag``; unset flags keep the config/recipe value. ``shown``: a command's
    own default of a field, as its help says it."""
    from ..training.config import Bool, TrainConfig

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)
              if f.name not in skip and f.name != "model_kwargs"}
    placed = {n for names in GROUPS.values() for n in names}
    new = [n for n in fields if n not in placed]
    sections = [(title, [n for n in names if n in fields]
                 + [n for n in new if title == "method" and n.startswith(METHOD_PREFIXES)])
                for title, names in GROUPS.items()]
    sections.append(("other", [n for n in new if not n.startswith(METHOD_PREFIXES)]))
    for title, names in sections:
        if not names:
            continue
        g = p.add_argument_group(title)
        for name in names:
            f = fields[name]
            kind = f.metadata["kind"]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            default = (shown or {}).get(name, default)
            check = _arg(lambda text, k=kind, n=name: k.check(n, k.parse(text)), name)
            flag = "--" + name.replace("_", "-")
            if isinstance(kind, Bool):
                g.add_argument(flag, dest=name, default=argparse.SUPPRESS, action=_Switch,
                               parse=check, help=_help(f.metadata["help"], default))
            else:
                g.add_argument(flag, dest=name, default=argparse.SUPPRESS, type=check,
                               help=_help(f.metadata["help"], default))


def _help(text: str, default: object) -> str:
    """A field's help with its default, unless the text says it (a None default)."""
    return text if "default:" in text else f"{text} (default: {default})"


def _device_flag(q: argparse.ArgumentParser) -> None:
    from ..training.config import field_kind

    kind = field_kind("device")
    q.add_argument("--device", default="auto",
                   type=_arg(lambda text: kind.check("device", text), "device"),
                   help="where the model runs: auto (CUDA when available), cpu, cuda, cuda:N "
                   "or mps (default: auto)")


def _version() -> str:
    from .. import __version__

    return __version__


_BATCH = _number("batch_size", integer=True, lo=1)


def build_parser() -> argparse.ArgumentParser:
    """The ``pof`` parser with one sub-parser per command."""
    p = _Parser(prog="pof", description="Pruning On-the-Fly: train with a pruning-aware "
                "penalty, then prune at any sparsity without retraining.")
    p.add_argument("--version", action="version", version=f"pof {_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_train, _eval, _prune, _export, _sweep, _finetune, _demo):
        add(sub)
    return p


def _train(sub: Any) -> None:
    t = sub.add_parser("train", help="train (or continue training) a model",
                       usage="pof train [--config RECIPE] [--resume] [options below]")
    t.add_argument("--config", help="recipe YAML; flags override its values")
    t.add_argument("--resume", action="store_true",
                   help="continue from OUT/last.safetensors (starts fresh if there is none)")
    _add_config_flags(t)
    t.set_defaults(func=commands.cmd_train)


def _data_flags(q: argparse.ArgumentParser) -> None:
    q.add_argument("--data", help="data set (default: the one the checkpoint was trained on)")
    q.add_argument("--batch-size", type=_BATCH, default=256, help="evaluation batch size")
    _device_flag(q)


def _eval(sub: Any) -> None:
    e = sub.add_parser("eval", help="top-1/top-5 accuracy and loss of a checkpoint")
    e.add_argument("checkpoint", help="a pof checkpoint (.safetensors)")
    _data_flags(e)
    e.set_defaults(func=commands.cmd_eval)


def _prune_flags(q: argparse.ArgumentParser) -> None:
    q.add_argument("--scope", choices=("layer", "global"), default="layer",
                   help="each layer to the sparsity (default), or one global threshold")
    q.add_argument("--exclude", type=_csv, default=None,
                   help="comma-separated layer-name patterns to keep dense (default: the "
                   "selection the checkpoint was trained with)")
    q.add_argument("--bn-recal", type=_number("bn_recal", integer=True, lo=0), default=0,
                   metavar="N", help="after pruning, re-estimate BatchNorm statistics on N "
                   f"unaugmented training batches of {RECAL_BATCH} images (no "
                   "weight updates; default 0 = off)")


def _prune(sub: Any) -> None:
    pr = sub.add_parser("prune", help="one-shot prune a checkpoint")
    pr.add_argument("checkpoint", help="a trained pof checkpoint (.safetensors)")
    how = pr.add_mutually_exclusive_group(required=True)
    how.add_argument("--sparsity", type=_arg(_sparsity, "sparsity"),
                     help="fraction of weights to remove, in [0, 1)")
    how.add_argument("--pattern", type=_arg(_pattern, "pattern"),
                     help="N:M pattern instead of --sparsity, e.g. 2:4")
    how.add_argument("--speedup", type=_number("speedup", lo=1), metavar="X",
                     help="channels: the widest model at least X times faster than the dense "
                     "one, measured in onnxruntime (CPU) on this machine")
    how.add_argument("--latency-ms", type=_number("latency_ms", lo=0, lo_open=True),
                     metavar="MS", help="channels: the widest model whose measured "
                     "onnxruntime latency per batch is at most MS milliseconds")
    pr.add_argument("--recover", choices=("zero", "mean"), default="mean",
                    help="value of the pruned weights: zero, or their mean (default)")
    pr.add_argument("--permanent", action="store_true",
                    help="bake the masks in (pof.remove); the result can no longer be fine-tuned"
                    " with fixed masks")
    pr.add_argument("--structure", choices=("weight", "channel"), default="weight",
                    help="prune single weights, or whole channels (removed physically: a "
                    "smaller dense model; --sparsity is then the fraction of each channel group)")
    pr.add_argument("--importance", choices=("pof", "magnitude"), default="pof",
                    help="channels: pof (consumer-column energy, what the channel penalty "
                    "shrinks) or magnitude (Torch-Pruning's group L2 magnitude)")
    pr.add_argument("--round-to", type=_arg(_round_tos, "round_to"), default=None,
                    metavar="N[,N...]", help="channels: keep a multiple of N in every group "
                    "(CPU runtimes run some channel counts faster than others). With --sparsity "
                    "one N, default 1: exactly the ratio; with --speedup / --latency-ms the "
                    "multiples to measure (1: exact widths), default 1,8,16: the widest model "
                    "that meets the request wins")
    pr.add_argument("--mean-batches", type=_number("mean_batches", integer=True, lo=1),
                    default=10, metavar="N", help="channels with --recover mean: training "
                    "batches (no labels used) that estimate each removed channel's mean")
    pr.add_argument("--onnx", action="store_true",
                    help="also write OUT/model.onnx, checked against PyTorch with onnxruntime")
    _latency_flags(pr)
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--no-eval", action="store_true",
                    help="skip the top-1 before and after pruning (measured when data is here)")
    _prune_flags(pr)
    _data_flags(pr)
    pr.set_defaults(func=commands.cmd_prune)


def _latency_flags(pr: argparse.ArgumentParser) -> None:
    speed = pr.add_argument_group("latency (--speedup / --latency-ms)")
    speed.add_argument("--latency-batch", type=_BATCH, default=1, metavar="N",
                       help="batch size the latency is measured at (default 1)")
    speed.add_argument("--threads", type=_number("threads", integer=True, lo=1), default=1,
                       help="onnxruntime intra-op threads (default 1)")
    speed.add_argument("--repeats", type=_number("repeats", integer=True, lo=1), default=10,
                       help="interleaved timing rounds; the median is kept (default 10)")
    speed.add_argument("--candidates", type=_arg(_sparsities, "candidates"), default=None,
                       help="channel fractions to measure (default: the trained range every "
                       "1/16, else 0 to 0.875 every 1/16)")


def _export(sub: Any) -> None:
    x = sub.add_parser("export", help="save a pruned checkpoint compactly (sparse on disk), "
                       "or any checkpoint as ONNX")
    x.add_argument("checkpoint", help="a checkpoint from `pof prune` (any, for --format onnx)")
    x.add_argument("--out", required=True, help="output .safetensors (or .onnx) file")
    x.add_argument("--format", choices=("safetensors", "onnx"), default="safetensors",
                   help="onnx: a plain graph, checked against PyTorch with onnxruntime (1e-4)")
    x.set_defaults(func=commands.cmd_export)


def _sweep(sub: Any) -> None:
    s = sub.add_parser("sweep", help="accuracy vs sparsity table and plots for checkpoints")
    s.add_argument("checkpoints", nargs="+", help="pof checkpoints (.safetensors)")
    s.add_argument("--sparsities", type=_arg(_sparsities, "sparsities"),
                   default="0.3,0.5,0.7,0.8,0.9", help="comma-separated fractions in [0, 1)")
    s.add_argument("--recover", type=_arg(_recovers, "recover"), default="zero,mean",
                   help="comma-separated: zero,mean")
    s.add_argument("--out", default="sweep", help="output folder")
    _data_flags(s)
    _prune_flags(s)
    s.set_defaults(func=commands.cmd_sweep)


def _finetune(sub: Any) -> None:
    f = sub.add_parser("finetune", help="fine-tune a pruned checkpoint with its masks fixed",
                       usage="pof finetune CHECKPOINT [--out OUT] [--resume] [options below]")
    f.add_argument("checkpoint", help="a pruned checkpoint from `pof prune`")
    f.add_argument("--out", help="run folder (default: next to the checkpoint)")
    f.add_argument("--resume", action="store_true",
                   help="continue from OUT/last.safetensors (starts fresh if there is none)")
    from ..training.config import TrainConfig

    method = {x.name for x in dataclasses.fields(TrainConfig)
              if x.name.startswith(METHOD_PREFIXES)}
    _add_config_flags(f, skip=FINETUNE_SKIP | method, shown={
        "epochs": "2.0", "lr": "0.01", "data": "the data the checkpoint records"})
    f.set_defaults(func=commands.cmd_finetune, epochs=2.0, lr=0.01)


def _demo(sub: Any) -> None:
    d = sub.add_parser("demo", help="offline demo on scikit-learn digits: standard vs pof")
    d.add_argument("--quick", action="store_true", help="a few seconds instead of minutes")
    d.add_argument("--out", default="pof-demo", help="output folder")
    d.add_argument("--seed", type=_number("seed", integer=True, lo=0), default=0,
                   help="random seed of every arm")
    _device_flag(d)
    d.set_defaults(func=commands.cmd_demo)
