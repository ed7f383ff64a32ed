"""User mistakes across every subcommand: each ends with exit code 2, one line on stderr
that names the problem, no traceback, and nothing new in the output folder. Crafted data
never runs code; a write killed mid-way leaves no temp file after the next write."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line_exit_2
from PIL import Image
from safetensors.torch import save_file

import pof
from pof.cli import main
from pof.training.checkpoint import save_checkpoint

ARCH = {"name": "small_cnn", "num_classes": 10, "kwargs": {"width": 4}}


class _Evil:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _cifar(root: Path, evil_marker: Path | None = None) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 b"labels": [0, 1, 2, 3]}
        if evil_marker is not None:
            batch[b"batch_label"] = _Evil(evil_marker)
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    return root


def _folder(root: Path, train_classes: int, test_classes: int, mode: str = "L") -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", train_classes), ("test", test_classes)):
        for c in range(n):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(2):
                shape = (8, 8, 3) if mode == "RGB" else (8, 8)
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
                    d / f"{i}.png")
    return root


def _ckpt(path: Path, meta: dict, model=None) -> Path:
    torch.manual_seed(0)
    model = model if model is not None else pof.create_model("small_cnn", num_classes=10,
                                                             width=4)
    return save_checkpoint(path, model, meta)


def _with_meta(src: Path, dest: Path, edit) -> Path:
    """A copy of checkpoint ``src`` whose JSON metadata ``edit(meta)`` rewrote."""
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        meta = json.loads(f.metadata()["pof"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open API
    meta = edit(meta)
    save_file(tensors, str(dest), metadata={"pof": json.dumps(meta)})
    return dest


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """Shared inputs (checkpoints, data sets, configs) outside the output folder."""
    d = tmp_path_factory.mktemp("fx")
    os.environ["POF_CACHE"] = str(d / "cache")
    meta = {"arch": ARCH, "data": {"source": "digits"}, "step": 0}
    ok = _ckpt(d / "ok.safetensors", meta)
    model = pof.create_model("small_cnn", num_classes=10, width=4)
    pruned = save_checkpoint(d / "pruned.safetensors", pof.prune(pof.to_sphere(model), 0.5,
                                                                 recover="mean"), meta)
    model = pof.create_model("small_cnn", num_classes=10, width=4)
    perm = save_checkpoint(d / "perm.safetensors",
                           pof.remove(pof.prune(model, 0.5, recover="mean")), meta)
    p = {"ok": ok, "pruned": pruned, "perm": perm}
    p["nodata"] = _ckpt(d / "nodata.safetensors", {"arch": ARCH})
    nobn = {**ARCH, "kwargs": {"width": 4, "norm": False}}
    p["nobn"] = _ckpt(d / "nobn.safetensors", {"arch": nobn, "data": {"source": "digits"}},
                      pof.create_model("small_cnn", num_classes=10, width=4, norm=False))
    p["arch_str"] = _with_meta(ok, d / "a.safetensors", lambda m: {**m, "arch": "small_cnn"})
    p["no_classes"] = _with_meta(ok, d / "b.safetensors", lambda m: {
        **m, "arch": {"name": "small_cnn", "kwargs": {"width": 4}}})
    p["meta_list"] = _with_meta(ok, d / "c.safetensors", lambda m: [m])
    p["struct_list"] = _with_meta(ok, d / "d.safetensors", lambda m: {**m, "structure": []})
    p["compact"] = _with_meta(ok, d / "e.safetensors", lambda m: {
        **m, "compact": {"fc.weight": [[10, 16], "float32"]}})
    p["neg_classes"] = _with_meta(ok, d / "f.safetensors", lambda m: {
        **m, "arch": {**ARCH, "num_classes": -5}})
    p["huge"] = _with_meta(ok, d / "g.safetensors", lambda m: {
        **m, "arch": {**ARCH, "kwargs": {"width": 100000}}})
    p["bad_config"] = _with_meta(pruned, d / "h.safetensors", lambda m: {
        **m, "config": {"epochs": "ten"}})
    trunc = ok.read_bytes()
    (d / "trunc.safetensors").write_bytes(trunc[: len(trunc) // 2])
    p["trunc"] = d / "trunc.safetensors"
    save_file({"w": torch.ones(2)}, str(d / "plain.safetensors"))
    p["plain"] = d / "plain.safetensors"
    torch.save({"x": 1}, d / "renamed.safetensors")
    p["renamed"] = d / "renamed.safetensors"
    torch.save(pof.create_model("small_cnn", num_classes=10, width=8).state_dict(),
               d / "wide.pt")
    p["wide"] = d / "wide.pt"
    torch.save({"x": _Evil(d / "pt-marker")}, d / "evil.pt")
    p["evil_pt"] = d / "evil.pt"
    torch.save(pof.create_model("small_cnn", num_classes=10, width=4).state_dict(),
               d / "weights.pt")
    p["pt"] = d / "weights.pt"
    p["gone_data"] = _ckpt(d / "gone.safetensors", {"arch": ARCH, "data": {
        "source": "../no/such/cifar10"}})
    p["marker"] = d / "marker"
    p["evil_cifar"] = _cifar(d / "evil-cifar", p["marker"])
    p["evil_ckpt"] = _ckpt(d / "evil.safetensors", {"arch": ARCH, "data": {
        "source": str(p["evil_cifar"])}})
    p["one_class"] = _folder(d / "one", 1, 1)
    p["uneven"] = _folder(d / "uneven", 2, 3)
    p["three"] = _folder(d / "three", 3, 3)
    p["rgb10"] = _folder(d / "rgb10", 10, 10, "RGB")
    p["file"] = d / "a-file"
    p["file"].write_text("x")
    yamls = {
        "bad_yaml": "model: [small_cnn\n", "tabs": "model: small_cnn\n\tdata: digits\n",
        "ten": "epochs: ten\n", "half": "batch_size: 64.5\n", "str_sparsity": "sparsity: '0.5'\n",
        "list": "- model\n", "unknown_key": "learning_rate: 0.1\n",
        "kw_unknown": "model: small_cnn\nmodel_kwargs: {depth: 3}\n",
        "kw_negative": "model: small_cnn\nmodel_kwargs: {width: -4}\n",
        "kw_huge": "model: small_cnn\nmodel_kwargs: {width: 100000}\n",
        "kw_str": "model: small_cnn\nmodel_kwargs: wide\n",
        "channels": "model: small_cnn\nmodel_kwargs: {in_channels: 3, width: 4}\n",
    }
    for name, text in yamls.items():
        (d / f"{name}.yaml").write_text(text)
        p[name] = d / f"{name}.yaml"
    run = d / "run"  # a run stopped after one step, to resume
    assert main(["train", "--model", "small_cnn", "--data", "digits", "--out", str(run),
                 "--epochs", "1", "--max-steps", "1", "--progress", "false",
                 "--workers", "0"]) == 0
    p["run"] = run
    return p


TRAIN = ["train", "--model", "small_cnn", "--data", "digits", "--epochs", "1",
         "--progress", "false", "--workers", "0"]

# (id, argv with {name} = fixture path / {out} = output folder, what the line must say)
CASES = [
    ("train-unknown-model", ["train", "--model", "resnet1000"], "available: mobilenet_v2"),
    ("train-missing-data", [*TRAIN, "--data", "/no/such/dir", "--out", "{out}/r"],
     "/no/such/dir"),
    ("train-sparsity-range", ["train", "--sparsity", "1.5"], "[0, 1)"),
    ("train-missing-config", ["train", "--config", "{out}/none.yaml"], "cannot read config"),
    ("train-malformed-yaml", ["train", "--config", "{bad_yaml}"], "not valid YAML"),
    ("train-tab-yaml", ["train", "--config", "{tabs}"], "not valid YAML"),
    ("train-epochs-string", ["train", "--config", "{ten}"], "epochs must be"),
    ("train-batch-float", ["train", "--config", "{half}"], "batch_size must be"),
    ("train-sparsity-string", ["train", "--config", "{str_sparsity}"], "sparsity must be"),
    ("train-config-list", ["train", "--config", "{list}"], "mapping"),
    ("train-unknown-key", ["train", "--config", "{unknown_key}"], "unknown config key"),
    ("train-kwargs-unknown", ["train", "--config", "{kw_unknown}", "--out", "{out}/r"],
     "does not accept"),
    ("train-kwargs-negative", ["train", "--config", "{kw_negative}", "--out", "{out}/r"],
     "does not accept"),
    ("train-kwargs-huge", ["train", "--config", "{kw_huge}", "--out", "{out}/r"],
     "parameters"),
    ("train-kwargs-string", ["train", "--config", "{kw_str}"], "model_kwargs must be"),
    ("train-device-name", [*TRAIN, "--device", "gpu0"], "device must be"),
    ("train-device-absent", [*TRAIN, "--device", "cuda:99", "--out", "{out}/r"], "cuda:99"),
    ("train-label-smoothing", [*TRAIN, "--label-smoothing", "2"], "label_smoothing"),
    ("train-lr-inf", [*TRAIN, "--lr", "inf"], "lr must be"),
    ("train-lr-nan", [*TRAIN, "--lr", "nan"], "lr must be"),
    ("train-lr-negative", [*TRAIN, "--lr", "-0.1"], "lr must be"),
    ("train-max-steps", [*TRAIN, "--max-steps", "-3"], "max_steps must be"),
    ("train-epochs-zero", [*TRAIN, "--epochs", "0"], "epochs must be"),
    ("train-batch-zero", [*TRAIN, "--batch-size", "0"], "batch_size must be"),
    ("train-workers", [*TRAIN, "--workers", "-1"], "workers must be"),
    ("train-penalty", [*TRAIN, "--penalty", "l2"], "penalty must be one of"),
    ("train-schedule", [*TRAIN, "--schedule", "linear"], "schedule must be one of"),
    ("train-form", [*TRAIN, "--penalty-form", "cube"], "penalty_form must be one of"),
    ("train-bool", [*TRAIN, "--amp", "maybe"], "true/false"),
    ("train-ckpt-every", [*TRAIN, "--ckpt-every", "0"], "ckpt_every must be"),
    ("train-momentum", [*TRAIN, "--momentum", "1.5"], "momentum must be"),
    ("train-seed", [*TRAIN, "--seed", "-1"], "seed must be"),
    ("train-refresh", [*TRAIN, "--penalty-refresh", "0"], "penalty_refresh must be"),
    ("train-exclude-nothing", [*TRAIN, "--penalty", "pof", "--exclude", "nosuch",
                               "--out", "{out}/r"], "matches no"),
    ("train-channels-kwargs", ["train", "--config", "{channels}", "--out", "{out}/r",
                               "--progress", "false"], "does not take"),
    ("train-channels-model", [*TRAIN, "--model", "resnet20", "--out", "{out}/r"],
     "does not take"),
    ("train-out-is-file", [*TRAIN, "--out", "{file}"], "existing file"),
    ("train-out-under-file", [*TRAIN, "--out", "{file}/r"], "is a file"),
    ("train-init-missing", [*TRAIN, "--init", "/no/such.pt", "--out", "{out}/r"], "not found"),
    ("train-init-shape", [*TRAIN, "--init", "{wide}", "--out", "{out}/r"], "do not fit"),
    ("train-init-pickle", [*TRAIN, "--init", "{evil_pt}", "--out", "{out}/r"], "cannot read"),
    ("train-one-class", [*TRAIN, "--data", "{one_class}", "--out", "{out}/r"], "at least 2"),
    ("train-class-mismatch", [*TRAIN, "--data", "{uneven}", "--out", "{out}/r"],
     "held-out split has 3"),
    ("train-evil-cifar", [*TRAIN, "--data", "{evil_cifar}", "--out", "{out}/r"], "refusing"),
    ("train-resume-seed", [*TRAIN, "--out", "{run}", "--resume", "--seed", "5"],
     "seed was 0, now 5"),
    ("train-resume-epochs", [*TRAIN, "--out", "{run}", "--resume", "--epochs", "3"],
     "epochs was 1.0, now 3.0"),
    ("train-resume-model", [*TRAIN, "--out", "{run}", "--resume", "--model", "resnet20"],
     "model was 'small_cnn', now 'resnet20'"),
    ("eval-missing", ["eval", "/no/such.safetensors"], "not found"),
    ("eval-folder", ["eval", "{out}"], "is a folder; name the checkpoint file"),
    ("eval-pt-file", ["eval", "{pt}"], "not a safetensors checkpoint"),
    ("eval-data-not-here", ["eval", "{gone_data}"], "pass --data"),
    ("prune-recal-data-not-here", ["prune", "{gone_data}", "--sparsity", "0.5", "--bn-recal",
                                   "2", "--out", "{out}/p"], "pass --data"),
    ("prune-recal-wrong-images", ["prune", "{ok}", "--sparsity", "0.5", "--bn-recal", "2",
                                  "--data", "{rgb10}", "--out", "{out}/p"], "does not take"),
    ("export-pt-file", ["export", "{pt}", "--out", "{out}/x.safetensors"],
     "only as `pof train --init`"),
    ("eval-truncated", ["eval", "{trunc}"], "truncated or corrupt"),
    ("eval-plain-safetensors", ["eval", "{plain}"], "without pof metadata"),
    ("eval-renamed-pickle", ["eval", "{renamed}"], "not a readable checkpoint"),
    ("eval-arch-string", ["eval", "{arch_str}"], "'arch' is a str"),
    ("eval-no-classes", ["eval", "{no_classes}"], "num_classes must be"),
    ("eval-meta-list", ["eval", "{meta_list}"], "JSON list"),
    ("eval-structure-list", ["eval", "{struct_list}"], "'structure' is a list"),
    ("eval-compact-no-values", ["eval", "{compact}"], "compact"),
    ("eval-negative-classes", ["eval", "{neg_classes}"], "num_classes must be"),
    ("eval-huge-width", ["eval", "{huge}"], "parameters"),
    ("eval-more-classes", ["eval", "{ok}", "--data", "{three}"], "3 classes"),
    ("eval-channels", ["eval", "{ok}", "--data", "{rgb10}"], "does not take"),
    ("eval-no-data", ["eval", "{nodata}"], "does not name its data"),
    ("eval-batch-zero", ["eval", "{ok}", "--batch-size", "0"], "batch_size must be"),
    ("eval-evil-cifar-meta", ["eval", "{evil_ckpt}"], "refusing"),
    ("prune-sparsity-range", ["prune", "{ok}", "--sparsity", "1.0", "--out", "{out}/p"],
     "[0, 1)"),
    ("prune-missing", ["prune", "/no/such.safetensors", "--sparsity", "0.5", "--out",
                       "{out}/p"], "not found"),
    ("prune-pattern-and-sparsity", ["prune", "{ok}", "--pattern", "2:4", "--sparsity", "0.5",
                                    "--out", "{out}/p"], "not allowed with"),
    ("prune-neither", ["prune", "{ok}", "--out", "{out}/p"], "one of the arguments"),
    ("prune-pattern-nm", ["prune", "{ok}", "--pattern", "4:4", "--out", "{out}/p"], "N < M"),
    ("prune-pattern-indivisible", ["prune", "{ok}", "--pattern", "2:3", "--out", "{out}/p"],
     "not divisible"),
    ("prune-out-is-file", ["prune", "{ok}", "--sparsity", "0.5", "--out", "{file}"],
     "existing file"),
    ("prune-exclude-nothing", ["prune", "{ok}", "--sparsity", "0.5", "--exclude", "nosuch",
                               "--out", "{out}/p"], "matches no"),
    ("prune-permanent-again", ["prune", "{perm}", "--sparsity", "0.5", "--out", "{out}/p"],
     "pruned permanently"),
    # a pruned checkpoint is pruned further now (issue 25): tests/test_data_rule.py
    ("prune-bn-recal", ["prune", "{ok}", "--sparsity", "0.5", "--bn-recal", "-1", "--out",
                        "{out}/p"], ">= 0"),
    ("prune-recover", ["prune", "{ok}", "--sparsity", "0.5", "--recover", "median", "--out",
                       "{out}/p"], "invalid choice"),
    ("export-not-pruned", ["export", "{ok}", "--out", "{out}/x.safetensors"], "not pruned"),
    ("export-out-folder", ["export", "{pruned}", "--out", "{out}"], "is a folder"),
    ("export-out-under-file", ["export", "{pruned}", "--out", "{file}/x.safetensors"],
     "existing file"),
    ("export-missing", ["export", "/no/such.safetensors", "--out", "{out}/x.safetensors"],
     "not found"),
    ("sweep-percent", ["sweep", "{ok}", "--sparsities", "50%", "--out", "{out}/s"],
     "fractions"),
    ("sweep-empty", ["sweep", "{ok}", "--sparsities", "", "--out", "{out}/s"],
     "no sparsities"),
    ("sweep-recover", ["sweep", "{ok}", "--recover", "median", "--out", "{out}/s"],
     "recover must be"),
    ("sweep-second-missing", ["sweep", "{ok}", "/no/such.safetensors", "--out", "{out}/s"],
     "not found"),
    ("sweep-out-is-file", ["sweep", "{ok}", "--out", "{file}"], "existing file"),
    ("sweep-no-batchnorm", ["sweep", "{nobn}", "--bn-recal", "2", "--out", "{out}/s"],
     "no BatchNorm"),
    ("prune-no-batchnorm", ["prune", "{nobn}", "--sparsity", "0.5", "--bn-recal", "2",
                            "--out", "{out}/p"], "no BatchNorm"),
    ("train-range-gmp", [*TRAIN, "--penalty", "gmp", "--sparsity", "0.3:0.9"], "range"),
    ("train-range-order", [*TRAIN, "--penalty", "pof", "--sparsity", "0.9:0.3"], "lo < hi"),
    ("train-range-text", [*TRAIN, "--penalty", "pof", "--sparsity", "0.3:x"], "lo:hi"),
    ("train-subnet", [*TRAIN, "--subnet", "half"], "subnet must be one of"),
    ("finetune-missing", ["finetune", "/no/such.safetensors", "--out", "{out}/f"],
     "not found"),
    ("finetune-epochs", ["finetune", "{pruned}", "--epochs", "0", "--out", "{out}/f"],
     "epochs must be"),
    ("finetune-out-is-file", ["finetune", "{pruned}", "--out", "{file}"], "existing file"),
    ("finetune-bad-config-meta", ["finetune", "{bad_config}", "--out", "{out}/f"],
     "epochs must be"),
    ("demo-out-is-file", ["demo", "--quick", "--out", "{file}"], "existing file"),
    ("demo-seed", ["demo", "--seed", "-1"], "seed must be"),
]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_there_are_enough_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("argv,needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mistake_is_one_line_exit_2_and_leaves_nothing(fx, tmp_path, monkeypatch, capsys,
                                                      argv, needle):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)  # relative default outputs land in the checked folder
    watched = {out: _tree(out), fx["run"]: _tree(fx["run"])}
    stamp = (fx["run"] / "config.yaml").read_text()
    argv = [a.format(out=out, **fx) for a in argv]
    err = one_line_exit_2(argv, capsys)
    assert needle in err, err
    for folder, before in watched.items():
        assert _tree(folder) == before, folder
    assert (fx["run"] / "config.yaml").read_text() == stamp
    assert not fx["marker"].exists() and not (fx["marker"].parent / "pt-marker").exists()


def test_crafted_cifar_batch_never_runs_code(fx):
    from pof.data import DataError, load_dataset

    with pytest.raises(DataError, match="refusing to load builtins.exec"):
        load_dataset(str(fx["evil_cifar"]), "train", progress=False)
    assert not fx["marker"].exists()


def test_legitimate_cifar_batch_still_loads(tmp_path):
    from pof.data import load_dataset

    ds = load_dataset(str(_cifar(tmp_path / "c10")), "train", progress=False)
    assert ds.images.shape == (20, 3, 32, 32)


def test_argparse_mistake_via_python_m_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "pof", "train", "--lr", "inf"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "lr must be" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_kill_during_write_leaves_no_temp_after_next_write(tmp_path):
    target = tmp_path / "last.safetensors"
    code = textwrap.dedent(f"""
        import sys, time
        from pof.fileio import atomic_write
        def write(f):
            f.write(b"partial"); f.flush(); print("writing", flush=True); time.sleep(60)
        atomic_write({str(target)!r}, write)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [p.name for p in tmp_path.iterdir()] == [f".last.safetensors.tmp{proc.pid}"]
    save_checkpoint(target, pof.create_model("small_cnn", width=4), {"arch": ARCH})
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]


def test_failed_write_removes_its_temp_file(tmp_path):
    from pof.fileio import atomic_write

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.bin", fail)
    assert list(tmp_path.iterdir()) == []


def test_resume_recovers_from_a_torn_metrics_line(tmp_path, capsys):
    run = tmp_path / "run"
    args = [*TRAIN, "--out", str(run), "--max-steps", "2"]
    assert main(args) == 0
    said = capsys.readouterr().out  # a stop says where it is and how to go on
    assert "stopped at step 2 of" in said and "--resume" in said
    assert not (run / "final.safetensors").exists()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 1, "st')  # killed mid-write
    assert main([*TRAIN, "--out", str(run), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "torn last line" in out and str(run / "metrics.jsonl") in out
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]


FULL_DISK = [
    ("train", [*TRAIN, "--out", "{out}/r"]),
    ("prune", ["prune", "{ok}", "--sparsity", "0.5", "--out", "{out}/p"]),
    ("export", ["export", "{pruned}", "--out", "{out}/x.safetensors"]),
    ("sweep", ["sweep", "{ok}", "--sparsities", "0.5", "--recover", "mean", "--out",
               "{out}/s"]),
    ("finetune", ["finetune", "{pruned}", "--epochs", "1", "--out", "{out}/f"]),
    ("demo", ["demo", "--quick", "--out", "{out}/d"]),
]


@pytest.mark.parametrize("argv", [c[1] for c in FULL_DISK], ids=[c[0] for c in FULL_DISK])
def test_full_disk_is_one_line_and_leaves_nothing(fx, tmp_path, monkeypatch, capsys, argv):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    monkeypatch.setattr(os, "fsync", full)  # every atomic write fails at its end
    code = main([a.format(out=out, **fx) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err, err
    assert len(err.strip().splitlines()) == 1
    assert _tree(out) == set()


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    import time

    proc = subprocess.Popen([sys.executable, "-m", "pof", "train", "--data", "digits",
                             "--out", str(tmp_path / "r")], stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # importing torch and the data: start-up
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("argv", [[*TRAIN, "--out", "{ro}/r"],
                                  ["prune", "{ok}", "--sparsity", "0.5", "--out", "{ro}/p"],
                                  ["export", "{pruned}", "--out", "{ro}/x.safetensors"],
                                  ["sweep", "{ok}", "--out", "{ro}/s"]],
                         ids=["train", "prune", "export", "sweep"])
def test_read_only_out_folder_is_one_line(fx, tmp_path, capsys, argv):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    code = main([a.format(ro=ro, **fx) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and "not writable" in err and len(err.strip().splitlines()) == 1
    assert list(ro.iterdir()) == []
