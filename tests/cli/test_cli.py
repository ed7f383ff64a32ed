"""The pof command: demo end to end, prune/eval/sweep/finetune on its output, user errors."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import pof
from pof.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out


def test_demo_quick_writes_table_and_plots(demo, capsys):
    for f in ("sweep.md", "sweep.json", "sweep.png", "weights.png"):
        assert (demo / f).stat().st_size > 0, f
    assert (demo / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (demo / "sweep.md").read_text()
    assert table.startswith("| model | recovery | as saved |")  # GMP is saved sparse
    assert {"| pof-range | mean", "| gmp80 | mean", "| standard | mean"} <= {
        "|".join(line.split("|")[:3]).strip() for line in table.splitlines()}


def test_prune_eval_sweep_finetune(demo, tmp_path, capsys):
    ckpt = demo / "pof-range" / "final.safetensors"
    assert main(["eval", str(ckpt)]) == 0
    assert "top1" in capsys.readouterr().out
    assert main(["prune", str(ckpt), "--sparsity", "0.5", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "global:" in out and (tmp_path / "p" / "pruned.safetensors").is_file()
    pruned = tmp_path / "p" / "pruned.safetensors"
    assert main(["export", str(pruned), "--out", str(tmp_path / "small.safetensors")]) == 0
    ratio = re.search(r"\((\d+)% of the", capsys.readouterr().out)
    assert ratio and int(ratio.group(1)) < 80  # 50% sparse: values + bit mask
    assert main(["eval", str(tmp_path / "small.safetensors")]) == 0
    code, err = _err(capsys, ["export", str(ckpt), "--out", str(tmp_path / "x.safetensors")])
    assert code == 2 and "not pruned" in err
    assert main(["finetune", str(pruned), "--epochs", "1", "--out", str(tmp_path / "ft"),
                 "--progress", "false"]) == 0
    import pof
    from pof.training.checkpoint import model_from_checkpoint

    model, _ = model_from_checkpoint(tmp_path / "ft" / "final.safetensors")
    layer = pof.sparsity_report(model).layers[1]
    assert abs(layer.sparsity - 0.5) < 1e-3  # masks stayed fixed while fine-tuning
    assert main(["sweep", str(ckpt), "--sparsities", "0.5", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "sweep.png").is_file()
    assert main(["prune", str(ckpt), "--sparsity", "0.5", "--permanent", "--recover", "zero",
                 "--out", str(tmp_path / "perm")]) == 0


def test_sweep_of_two_checkpoints_in_one_folder_keeps_them_apart(demo, tmp_path, capsys):
    import json
    import shutil

    for arm in ("pof-range", "standard"):  # the kept-checkpoint layout: named files
        shutil.copy(demo / arm / "final.safetensors", tmp_path / f"{arm}-s0.safetensors")
    assert main(["sweep", str(tmp_path / "pof-range-s0.safetensors"),
                 str(tmp_path / "standard-s0.safetensors"), "--sparsities", "0.5",
                 "--recover", "zero", "--out", str(tmp_path / "s")]) == 0
    rows = json.loads((tmp_path / "s" / "sweep.json").read_text())
    dense = {r["label"]: r["top1"] for r in rows if r["recover"] == "dense"}
    assert sorted(dense) == ["pof-range-s0", "standard-s0"]
    demo_rows = json.loads((demo / "sweep.json").read_text())
    for arm in ("pof-range", "standard"):  # each row is its own model's
        assert dense[f"{arm}-s0"] == next(r["top1"] for r in demo_rows
                                          if r["label"] == arm and r["recover"] == "dense")


def test_prune_with_bn_recal_then_eval_is_the_sweep_row(demo, tmp_path, capsys):
    import json

    ckpt = str(demo / "pof-range" / "final.safetensors")
    assert main(["sweep", ckpt, "--sparsities", "0.7", "--recover", "mean", "--bn-recal", "3",
                 "--out", str(tmp_path / "s")]) == 0
    rows = json.loads((tmp_path / "s" / "sweep.json").read_text())
    row = next(r for r in rows if r["recover"] == "mean")
    assert main(["prune", ckpt, "--sparsity", "0.7", "--bn-recal", "3", "--out",
                 str(tmp_path / "p")]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "p" / "pruned.safetensors")]) == 0
    top1 = float(re.search(r"top1 ([\d.]+)%", capsys.readouterr().out).group(1))
    assert top1 == pytest.approx(100 * row["top1"], abs=0.006)  # the printed 2 decimals


@pytest.mark.parametrize("paths,labels", [
    (["runs/a/final.safetensors", "runs/b/final.safetensors"], ["a", "b"]),
    (["d/gmp70-s0.safetensors", "d/pof-range-s0.safetensors"], ["gmp70-s0", "pof-range-s0"]),
    (["x/run/final.safetensors", "y/run/final.safetensors"], ["x/run", "y/run"]),
    (["a/last.safetensors", "a/final.safetensors"], ["last", "final"]),
    (["runs/a/final.safetensors"], ["a"]),
])
def test_sweep_labels_are_distinct_and_short(paths, labels):
    from pof.workflows.sweeps import sweep_labels

    assert sweep_labels(paths) == labels


def _err(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: a value its type= refused
        code = e.code
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("argv,needle", [
    (["train", "--model", "resnet1000"], "available: mobilenet_v2"),
    (["train", "--data", "/no/such/dir"], "/no/such/dir"),
    (["train", "--sparsity", "1.5"], "[0, 1)"),
    (["eval", "/no/such.safetensors"], "not found"),
    (["prune", "/no/such.safetensors", "--sparsity", "0.5", "--out", "x"], "not found"),
])
def test_user_mistakes_exit_2_with_one_line(capsys, argv, needle):
    code, err = _err(capsys, argv)
    assert code == 2 and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_config_key_and_bad_sparsity_on_checkpoint(demo, tmp_path, capsys):
    cfg = tmp_path / "r.yaml"
    cfg.write_text("model: small_cnn\nlearning_rate: 0.1\n")
    code, err = _err(capsys, ["train", "--config", str(cfg)])
    assert code == 2 and "unknown config key(s): learning_rate" in err
    code, err = _err(capsys, ["prune", str(demo / "pof-range" / "final.safetensors"),
                              "--sparsity", "1.0", "--out", str(tmp_path)])
    assert code == 2 and "[0, 1)" in err
    code, err = _err(capsys, ["sweep", str(demo / "pof-range" / "final.safetensors"),
                              "--sparsities", "50%"])
    assert code == 2 and "fractions" in err


def test_argparse_errors_are_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "pof", "prune"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_every_flag_has_help():
    from pof.cli.parser import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        for action in parser._actions:
            assert action.help, (name, action.dest)


def test_training_selection_is_used_by_prune(tmp_path, capsys):
    from pof.training.checkpoint import save_checkpoint

    model = pof.to_sphere(pof.create_model("small_cnn", num_classes=10, width=4), exclude="fc")
    src = save_checkpoint(tmp_path / "m.safetensors", model, {
        "arch": {"name": "small_cnn", "num_classes": 10, "kwargs": {"width": 4}},
        "data": {"source": "digits"}})
    assert main(["prune", str(src), "--sparsity", "0.5", "--out", str(tmp_path / "p")]) == 0
    rows = {r.name: r.sparsity for r in pof.sparsity_report(model_from(tmp_path)).layers}
    assert rows["fc"] == 0.0 and rows["features.1.0"] == pytest.approx(0.5, abs=1e-3)


def model_from(tmp_path):
    from pof.training.checkpoint import model_from_checkpoint

    return model_from_checkpoint(tmp_path / "p" / "pruned.safetensors")[0]
