"""Progress and the command line a newcomer meets (issue 25 item 7): step records and log
lines without a terminal, `pof train --help` in sections, switches, per-command flags,
`pof --version`, TensorBoard in `[all]`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from pof.cli import main
from pof.training.progress import StepClock, due, log_step, step_line, step_record

TRAIN = ["train", "--model", "small_cnn", "--data", "digits",
         "--epochs", "2", "--batch-size", "64", "--workers", "0", "--device", "cpu"]


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


# -- the helper


def test_a_step_record_is_due_every_n_steps_and_at_the_stop():
    assert [s for s in range(1, 31) if due(s, 10, None)] == [10, 20, 30]
    assert [s for s in range(1, 8) if due(s, 50, 7)] == [7]


def test_step_record_and_line_say_where_the_run_is():
    sums = {"loss": 23.0, "penalty": 0.0, "correct": 5, "n": 10}
    rec = step_record(30, 23, sums, 0.05, 75.0, {"pruned_energy": 0.5}, stopped=True)
    assert rec == {"kind": "step", "epoch": round(30 / 23, 4), "step": 30, "train_loss": 2.3,
                   "train_penalty": 0.0, "train_acc": 0.5, "lr": 0.05, "time_s": 75.0,
                   "pruned_energy": 0.5, "stopped": True}
    line = step_line(rec, total=46, epochs=2, left=40.0)
    assert line == ("epoch 2/2 step 30/46 (65%): loss 2.3000, acc 0.5000, lr 0.05 "
                    "[1m15s elapsed, ~40s left]")
    assert StepClock(0, now=100.0).left(10, 40, now=120.0) == pytest.approx(60.0)
    end_of_first = step_record(23, 23, sums, 0.05, 1.0)  # the last step of epoch 1
    assert step_line(end_of_first, total=46, epochs=2).startswith("epoch 1/2 step 23/46")


def _fake_trainer(tmp_path: Path, **cfg) -> SimpleNamespace:
    cfg = SimpleNamespace(**{"log_every": 5, "max_steps": None, "progress": True,
                             "epochs": 1.0, **cfg})
    return SimpleNamespace(cfg=cfg, step=0, main=True, steps_per_epoch=20, total=20,
                           sums={"loss": 1.0, "penalty": 0.0, "correct": 1, "n": 2}, lr=0.1,
                           method=SimpleNamespace(logs=dict), metrics=[], out=tmp_path,
                           tb=None)


@pytest.mark.parametrize("terminal", [False, True])
def test_log_step_writes_every_n_steps_and_prints_only_without_a_terminal(
        tmp_path, capsys, terminal):
    t = _fake_trainer(tmp_path)
    for _ in range(12):
        t.step += 1
        log_step(t, SimpleNamespace(disable=not terminal))
    assert [r["step"] for r in _records(tmp_path)] == [5, 10]
    lines = capsys.readouterr().out.splitlines()
    assert lines == [] if terminal else [x[:24] for x in lines] == [
        "epoch 1/1 step 5/20 (25%", "epoch 1/1 step 10/20 (50"]


# -- through the training loop and the CLI (output captured: not a terminal)


def test_a_short_run_without_a_terminal_logs_lines_and_records(tmp_path, capsys):
    run = tmp_path / "r"
    assert main([*TRAIN, "--out", str(run), "--max-steps", "30", "--log-every", "10"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^epoch \d/2 step (\d+)/44", out, re.M) == ["10", "20", "30"]
    assert [(r.get("kind", "epoch"), r["step"]) for r in _records(run)] == [  # step 22 ends epoch 1
        ("step", 10), ("step", 20), ("epoch", 22), ("step", 30)]


def test_max_steps_30_leaves_a_record_with_the_default_log_every(tmp_path, capsys):
    run = tmp_path / "r"
    assert main([*TRAIN, "--out", str(run), "--max-steps", "30", "--no-progress"]) == 0
    assert "step 30/44" not in capsys.readouterr().out  # --no-progress: no lines
    epoch, rec = _records(run)  # the first epoch's record (22 steps), then the stop's
    assert epoch["step"] == 22 and "test_top1" in epoch
    assert rec["step"] == 30 and rec["stopped"] and rec["train_loss"] > 0


def test_a_resumed_run_has_the_records_of_an_uninterrupted_one(tmp_path):
    common = [*TRAIN, "--log-every", "10", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "full")]) == 0
    assert main([*common, "--out", str(tmp_path / "part"), "--max-steps", "27"]) == 0
    assert main([*common, "--out", str(tmp_path / "part"), "--resume"]) == 0
    full, part = _records(tmp_path / "full"), _records(tmp_path / "part")
    assert [r["step"] for r in part] == [r["step"] for r in full] == [10, 20, 22, 30, 40, 44]
    assert [r.get("kind") for r in full] == ["step", "step", None, "step", "step", None]
    assert [r["train_loss"] for r in part] == [r["train_loss"] for r in full]


def test_switches_take_the_flag_forms_and_the_old_value_form(tmp_path):
    from pof.cli.parser import build_parser

    p = build_parser()
    for argv, want in ((["--amp"], True), (["--no-amp"], False), (["--amp", "false"], False),
                       (["--amp=yes"], True), (["--sphere", "auto"], None)):
        dest = argv[0].lstrip("-").split("=")[0].removeprefix("no-")
        assert getattr(p.parse_args(["train", *argv]), dest) is want, argv
    with pytest.raises(SystemExit):
        p.parse_args(["train", "--no-amp", "true"])


def test_train_help_is_in_sections(capsys):
    from pof.cli.parser import GROUPS
    from pof.training.config import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    titles = re.findall(r"^(\S[^:\n]*):$", text, re.M)
    assert titles == ["options", "model and data", "optimisation", "method", "pruning",
                      "run control", "logging"]
    assert "--tensorboard, --no-tensorboard" in text
    placed = [n for names in GROUPS.values() for n in names]
    fields = {f.name for f in TrainConfig.__dataclass_fields__.values()} - {"model_kwargs"}
    assert sorted(placed) == sorted(fields)  # every field in exactly one section


def test_finetune_lists_only_its_flags_and_refuses_the_others(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = capsys.readouterr().out
    for flag in ("--subnet", "--gmp-", "--penalty", "--sparsity", "--sphere"):
        assert flag not in text, flag
    assert "--epochs EPOCHS" in text and "(default: 2.0)" in text
    with pytest.raises(SystemExit) as e:
        main(["finetune", str(tmp_path / "x.safetensors"), "--subnet", "split"])
    assert e.value.code == 2
    assert "unrecognized arguments: --subnet split" in capsys.readouterr().err


def test_version(capsys):
    import pof

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"pof {pof.__version__}"


def test_all_installs_tensorboard():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert "tensorboard" in extras["tensorboard"][0]
    assert "tensorboard" in re.fullmatch(r"pof\[(.*)\]", extras["all"][0])[1].split(",")


# -- bars elsewhere (sweeps, evaluation, data decoding): lines off a terminal


def test_progress_bar_prints_lines_off_a_terminal_for_long_tasks_only(capsys, monkeypatch):
    import time

    from pof.progress import progress_bar

    for _ in progress_bar(range(3), desc="quick", every_s=0.0, delay_s=10.0):
        pass
    assert capsys.readouterr().out == ""  # shorter than delay_s: nothing
    with progress_bar(total=4, desc="decoding", unit="img", every_s=0.0, delay_s=0.0) as bar:
        for _ in range(4):
            time.sleep(0.01)
            bar.update(1)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("decoding: 4/4 (100%) [") and len(set(lines)) == len(lines)
    for _ in progress_bar(range(3), desc="hidden", show=False, delay_s=0.0):
        pass
    assert capsys.readouterr().out == ""


def test_a_sweep_off_a_terminal_says_where_it_is(capsys, monkeypatch):
    from torch import nn

    import pof.progress
    from pof.sweep import sweep

    monkeypatch.setattr(pof.progress, "DELAY_S", 0.0)
    monkeypatch.setattr(pof.progress, "EVERY_S", 0.0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    sweep(model, lambda m: {"top1": 1.0}, [0.5, 0.7], recovers=("zero",), label="m")
    assert capsys.readouterr().out.splitlines()[-1].startswith("sweep m: 3/3 (100%) [")
    sweep(model, lambda m: {"top1": 1.0}, [0.5], recovers=("zero",), progress=False)
    assert capsys.readouterr().out == ""
