"""Bench scripts: each arm is a valid training, each command parses, reports use archived runs."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from pof.training.config import TrainConfig

pytestmark = pytest.mark.bench

SPEC = importlib.util.spec_from_file_location(
    "bench_cifar10", Path(__file__).parents[2] / "bench" / "cifar10.py")
bench = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = bench  # dataclasses look their module up
SPEC.loader.exec_module(bench)
PLAN = bench.PROFILES["medium"][0]


@pytest.mark.parametrize("name", list(bench.ARMS))
def test_arm_is_a_valid_config_and_reads_back(name):
    values = bench.ARMS[name].config(PLAN)
    cfg = TrainConfig(**values)  # the CLI flags carry the same values
    assert bench.arm_of({**vars(cfg), "init": "pre.safetensors"}, PLAN) == name
    assert bench.arm_of({**vars(cfg), "init": None}, PLAN) == f"{name}-scratch"
    flags = bench.arm_flags(PLAN, name)
    assert flags[:2] == ["--penalty", values["penalty"]]


def test_every_profile_names_known_arms():
    for plans in bench.PROFILES.values():
        for plan in plans:
            assert set(plan.arms) | set(plan.scratch) <= set(bench.ARMS)


@pytest.mark.parametrize("script", ["structured.py", "latency.py", "fold_cost.py"])
def test_speed_bench_scripts_start(script):
    """The issue-10 scripts import the ported modules and parse their flags."""
    import subprocess

    bench_dir = Path(__file__).parents[2] / "bench"
    out = subprocess.run([sys.executable, str(bench_dir / script), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--out" in out


BENCH = Path(__file__).parents[2] / "bench"


def load_bench(script: str):
    """A fresh module of ``bench/<script>.py`` (tests may patch it freely); the bench folder
    goes on ``sys.path``, as it is for a script run from there (``import runner``)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{script}", BENCH / f"{script}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_on_the_fly():
    return load_bench("on_the_fly")


def sweep_rows(arm, seed, cells, fill="mean", bn=True):
    """Sweep rows as rows_of() builds them: {sparsity: top-1 %}, 0 is the dense row."""
    return [{"arm": arm, "seed": seed, "bn": bn, "sparsity": s, "top1": v / 100,
             "recover": "dense" if s == 0 else fill} for s, v in cells.items()]


def test_on_the_fly_targets_judge_means_over_seeds():
    otf = load_on_the_fly()
    rows = (sweep_rows("standard", 0, {0.0: 87.0}) + sweep_rows("standard", 1, {0.0: 88.0})
            + sweep_rows("pof-range", 0, {0.0: 87.2, 0.7: 85.0, 0.9: 80.0})
            + sweep_rows("pof-range", 1, {0.0: 87.4, 0.7: 85.2, 0.9: 80.0})
            + sweep_rows("gmp70", 0, {0.7: 85.6}) + sweep_rows("pof70", 0, {0.7: 85.4})
            + sweep_rows("pof70", 0, {0.7: 99.0}, fill="zero")  # not the deployed fill
            + sweep_rows("gmp90", 0, {0.9: 83.0}) + sweep_rows("pof90", 0, {0.9: 84.0}))
    assert otf.deploy_cell(rows, "pof-range", 0.7) == pytest.approx([85.0, 85.2])
    lines = {r.split(" | ")[0][2:]: r for r in otf.targets(rows)[2:]}
    dense = lines["pof range dense within 0.5 of standard"]
    assert "87.30 ± 0.10" in dense and "87.50 ± 0.50" in dense and dense.endswith("| met |")
    at70 = lines["pof range at 70% within 0.5 of the best dedicated model"]
    assert "gmp70 85.60" in at70 and "| -0.50 | met |" in at70  # the better of gmp70/pof70
    assert lines["pof range at 90% within 0.5 of the best dedicated model"].endswith("missed |")
    assert lines["pof dedicated ≥ GMP at 70%"].endswith("| -0.20 | missed |")
    assert lines["pof dedicated ≥ GMP at 90%"].endswith("| +1.00 | met |")
    assert not any("pof50" in k for k in lines)  # arms not run yet are left out


def test_on_the_fly_inject_replaces_only_the_marked_block(tmp_path):
    otf = load_on_the_fly()
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- begin t -->\nold\n<!-- end t -->\nprose\n")
    otf.inject(page, "t", "| new |")
    otf.inject(page, "absent", "ignored")
    assert page.read_text() == "intro\n<!-- begin t -->\n| new |\n<!-- end t -->\nprose\n"
    page.write_text("intro\n<!-- begin t -->\nold\nprose that must stay\n")  # no end marker
    with pytest.raises(SystemExit, match="one begin and one end marker"):
        otf.inject(page, "t", "| new |")
    assert "prose that must stay" in page.read_text()


def test_on_the_fly_archives_each_runs_commands_once(tmp_path):
    import json

    otf = load_bench("runner")
    log, archive = tmp_path / "log.jsonl", tmp_path / "archive.jsonl"
    lines = [json.dumps({"cmd": c, "wall_s": 1.0}) for c in (
        "python -m pof train --seed 1 --out runs/pof-range-s1",
        "python -m pof sweep runs/pof-range-s1/final.safetensors --out x",
        "python -m pof train --out runs/pof-range-every2-s1",  # another arm
        "python -m pof train --out runs/pof-range-s10")]  # another seed
    log.write_text("\n".join(lines) + "\n")
    otf.archive_commands(log, archive, "pof-range-s1")
    otf.archive_commands(log, archive, "pof-range-s1")
    assert archive.read_text().splitlines() == lines[:2]


def test_at_scale_publishes_the_archived_runs(tmp_path, monkeypatch):
    """bench/at_scale.py --report-only: the headline table from archived sweeps only."""
    import json

    at_scale = load_bench("at_scale")
    for arm, seed, dense, at70 in (("standard", 0, 87.0, 82.0), ("standard", 1, 88.0, 83.0),
                                   ("pof-range", 0, 86.0, 85.0)):
        run = tmp_path / "on_the_fly" / f"{arm}-s{seed}"
        (run / "sweep-bn").mkdir(parents=True)
        (run / "metrics.jsonl").write_text(json.dumps({"time_s": 10.0}) + "\n")
        (run / "config.yaml").write_text("epochs: 4.0\nlr: 0.05\n")
        (run / "sweep-bn" / "sweep.json").write_text(json.dumps(
            [{"sparsity": 0.0, "recover": "dense", "top1": dense / 100},
             {"sparsity": 0.7, "recover": "mean", "top1": at70 / 100}]))
    readme = tmp_path / "README.md"
    readme.write_text("# r\n<!-- begin headline -->\n<!-- end headline -->\n")
    monkeypatch.setattr(sys, "argv", ["at_scale.py", "--report-only", "--docs", str(tmp_path),
                                      "--readme", str(readme)])
    at_scale.main()
    assert "| pof, one model for 30–90% [1 seed] | 86.00 | – | **85.00** |" in readme.read_text()
    page = (tmp_path / "cifar10.md").read_text()
    rows = {line.split(" | ")[0]: line for line in page.splitlines() if line.startswith("| ")}
    assert rows["| standard, one-shot + BN re-estimation"].startswith(  # bold: best mean
        "| standard, one-shot + BN re-estimation | **87.50 ± 0.50** | – | 82.50 ± 0.50 |")
    assert "| 86.00 | – | **85.00** |" in rows["| pof, one model for 30–90% [1 seed]"]
    assert not any("GMP" in k for k in rows)  # not run: no row
    assert "## resnet56\n\nNot run yet" in page
    assert "| pof range dense within 0.5 of standard | pof-range 86.00 vs standard 87.50 ± 0.50 " \
        "| -1.50 | missed |" in page
    assert "for the same 4 epochs" in page and "No commands log archived" in page
    # bench/on_the_fly.py --report-only rebuilds its own tables and, through publish, these
    (tmp_path / "cifar10.md").unlink()
    monkeypatch.setattr(sys, "argv", ["on_the_fly.py", "--report-only", "--docs", str(tmp_path),
                                      "--readme", str(readme)])
    load_on_the_fly().main()
    assert (tmp_path / "cifar10.md").read_text() == page
    assert "| pof-range | 1 | 86.00 |" in (tmp_path / "on_the_fly_tables.md").read_text()


def _fake_run(out, top1: float = 0.9, epochs: float = 4) -> Path:
    """A finished run folder as `pof train`/`finetune` leaves it: config, one metrics line,
    a final checkpoint (empty: nothing reads it here)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(f"epochs: {epochs}\n")
    (out / "metrics.jsonl").write_text(json.dumps({"epoch": epochs, "test_top1": top1}) + "\n")
    (out / "final.safetensors").write_bytes(b"")
    return out / "final.safetensors"


def test_at_scale_commands_all_parse(tmp_path, monkeypatch):
    """The prepared GPU script, dry: every `pof` command it would run is accepted by the
    CLI's parser, and the MobileNetV2 report is written (trainings replaced by stubs)."""
    from pof.cli.parser import build_parser

    at_scale = load_bench("at_scale")
    pof_cmds, scripts = [], []

    top1 = {"conventional": 0.80, "gmp": 0.85, "pof": 0.88}  # after fine-tuning; dense 0.9

    def fake_train_once(cmd, out, log):
        pof_cmds.append([*cmd, "--out", str(out)])
        arm = out.parent.name.split("-s")[0]
        return _fake_run(out, top1[arm] if out.name == "ft" else 0.9)

    monkeypatch.setattr(at_scale, "train_once", fake_train_once)
    monkeypatch.setattr(at_scale, "run", lambda cmd, log: pof_cmds.append(cmd))
    monkeypatch.setattr(at_scale.subprocess, "run", lambda cmd, **kw: scripts.append(cmd))
    monkeypatch.setattr(sys, "argv", ["at_scale.py", "--device", "cuda", "--jobs", "1",
                                      "--out", str(tmp_path / "runs"), "--docs",
                                      str(tmp_path / "docs")])
    at_scale.main()
    parser = build_parser()
    kinds = set()
    for cmd in pof_cmds:
        assert cmd[1:3] == ["-m", "pof"]
        args = parser.parse_args(cmd[3:])
        kinds.add(args.command)
        assert args.device == "cuda", cmd
    assert kinds == {"train", "prune", "finetune"}
    assert len(pof_cmds) == 2 + 2 * 3 + 2 * 2 + 2 * 2  # pretrains, fine-tunes, trains, prunes
    assert sorted(c[c.index("--model") + 1] if "--model" in c else "resnet20"
                  for c in scripts) == ["resnet20", "resnet56"]  # the protocol, both depths
    for c in scripts:  # the protocol's arms only, every dedicated model among them
        assert set(c[c.index("--arms") + 1].split(",")) == {
            "standard", "pof-range", "cram", *load_on_the_fly().DEDICATED}
    r56 = next(c for c in scripts if "--model" in c)  # continues its own pretrain
    assert c[c.index("--device") + 1] == "cuda"
    assert r56[r56.index("--init") + 1] == str(tmp_path / "runs" / "resnet56-standard" /
                                               "final.safetensors")
    page = (tmp_path / "docs" / "mobilenet_v2_70.md").read_text()  # from the archive
    assert "| pof | 88.00 (seeds: 88.00, 88.00) | 2.00 | 90.00 (90.00, 90.00) |" in page
    assert "| conventional | 80.00 (seeds: 80.00, 80.00) | 10.00 | –" in page
    assert "pof 2.00 vs conventional 10.00 / 2 = 5.00: met" in page
    assert "best other arm, gmp (5.00 / 2 = 2.50): met" in page
    assert (tmp_path / "docs" / "at_scale" / "mbv2" / "gmp-s1" / "ft" / "metrics.jsonl").is_file()


def test_at_scale_mobilenet_at_reduced_width(tmp_path, monkeypatch):
    """`--mbv2-width 0.5`: every MobileNetV2 training (the pretrain with its recipe's
    values) builds the half-width model, in folders of its own, and the page says so."""
    from pof.cli.parser import build_parser
    from pof.workflows.training import train_config as _train_config

    at_scale = load_bench("at_scale")
    trains = []

    def fake_train_once(cmd, out, log):
        trains.append(([*cmd, "--out", str(out)], out))
        return _fake_run(out)

    monkeypatch.setattr(at_scale, "train_once", fake_train_once)
    monkeypatch.setattr(at_scale, "run", lambda cmd, log: None)
    monkeypatch.setattr(sys, "argv", ["at_scale.py", "--steps", "mbv2", "--device", "cpu",
                                      "--jobs", "1", "--seeds", "0", "--mbv2-width", "0.5",
                                      "--out", str(tmp_path / "runs"), "--docs",
                                      str(tmp_path / "docs")])
    at_scale.main()
    parser = build_parser()
    outs = []
    for cmd, out in trains:
        args = parser.parse_args(cmd[3:])
        if args.command != "train":
            continue
        cfg = _train_config(args)
        assert (cfg.model, cfg.model_kwargs) == ("mobilenet_v2_cifar", {"width_mult": 0.5})
        outs.append(out.relative_to(tmp_path / "runs").as_posix())
    assert outs[0] == "mobilenet_v2_cifar-w0.5-standard"
    assert _train_config(parser.parse_args(trains[0][0][3:])).lr == 0.1  # the recipe's
    assert sorted(outs[1:]) == ["mbv2-w0.5/gmp-s0/train", "mbv2-w0.5/pof-s0/train"]
    assert "at width 0.5" in (tmp_path / "docs" / "mobilenet_v2_70.md").read_text()


@pytest.mark.parametrize("arm", list(load_on_the_fly().ARMS))
def test_on_the_fly_arm_is_a_valid_training(arm, tmp_path):
    """Every arm's `pof train` command parses and makes a valid, resolved TrainConfig."""
    from pof.cli.parser import build_parser
    from pof.workflows.training import train_config as _train_config

    otf = load_on_the_fly()
    ns = argparse.Namespace(model="resnet20", data=tmp_path, init=tmp_path / "i.safetensors",
                            epochs=4, lr=0.05, device=None)
    cmd = otf.train_command(arm, 0, ns)
    cfg = _train_config(build_parser().parse_args([*cmd[3:], "--out", str(tmp_path)]))
    cfg = cfg.resolved()
    budget = float(otf.ARMS[arm].get("epochs", 4))  # the longer-budget arms say theirs
    assert cfg.penalty == otf.ARMS[arm]["penalty"] and cfg.seed == 0 and cfg.epochs == budget
    assert cfg.subnet_distill == float(otf.ARMS[arm].get("subnet-distill", 0))
    if cfg.penalty == "pof":  # what the tables say: a range energy/5, one target sine/20
        want = ("energy", 5.0) if ":" in otf.ARMS[arm]["sparsity"] else ("sine", 20.0)
        weight = float(otf.ARMS[arm].get("penalty-weight", want[1]))
        assert (cfg.penalty_form, cfg.penalty_weight) == (want[0], weight)


def test_cost_line_names_mixed_devices_only_when_they_are():
    at_scale = load_bench("at_scale")
    cpu = [{"cmd": "python -m pof train --out r/a-s0", "wall_s": 3600.0},  # logged before hosts
           {"cmd": "python -m pof sweep x --out r/a-s1", "wall_s": 1800.0,
            "host": "AMD EPYC, 2 cores", "torch": "2.13.0+cpu", "threads": "1"}]
    line = at_scale.cost_line(cpu, "on_the_fly")
    assert "1.0 h of training and 0.5 h of sweeps" in line
    assert "on AMD EPYC, 2 cores (no GPU)," in line and "others on a CPU" not in line
    gpu = [*cpu, {"cmd": "python -m pof train --device cuda --out r/a-s2", "wall_s": 60.0,
                  "host": "H200", "torch": "2.13.0+cu128", "threads": "1"}]
    assert "Some runs ran on a GPU, others on a CPU" in at_scale.cost_line(gpu, "on_the_fly")


def test_targets_legend_quotes_the_seed_spread_of_its_rows():
    otf = load_on_the_fly()

    def rows(arm, s, vals):
        return [{"arm": arm, "seed": k, "bn": True, "sparsity": s, "recover": "mean",
                 "top1": v / 100} for k, v in enumerate(vals)]

    held = [*rows("pof70", 0.7, [86.0, 86.5, 86.2]), *rows("standard", 0.0, [87.0, 87.1])]
    fallen = rows("pof70", 0.9, [40.0, 50.0])  # off its target: not a seed spread
    assert otf.seed_spread(held + fallen) == pytest.approx(0.5)
    assert "differ by up to 0.50 points" in otf.targets_note(held + fallen)
    one = rows("pof70", 0.7, [86.0])
    assert otf.seed_spread(one) is None  # one seed: no spread
    assert "one seed per arm, so no seed spread" in otf.targets_note(one)


def test_portable_paths_from_another_machine():
    otf = load_bench("runner")  # the shared run helpers
    assert otf.portable("/tmp/w/pof/runs/at_scale/x") == "runs/at_scale/x"
    assert otf.portable("/tmp/w/shared/data/cifar10") == "../shared/data/cifar10"
    assert otf.portable("/tmp/w/pof/recipes/r.yaml") == "recipes/r.yaml"
    assert otf.portable("/tmp/w/pof/runs/shared/x") == "runs/shared/x"  # the first mark
    assert otf.portable(str(otf.ROOT / "runs" / "a")) == "runs/a"  # here: from the root
    assert otf.portable("0.7") == "0.7" and otf.portable("/etc/hosts") == "/etc/hosts"
    assert otf.shown(["py", "-m", "pof", "eval", "/x/pof/runs/a/final.safetensors"]) == (
        "pof eval runs/a/final.safetensors")


def test_at_scale_archive_keeps_finished_runs_and_each_command_once(tmp_path):
    at_scale = load_bench("at_scale")
    out, docs = tmp_path / "runs", tmp_path / "docs"
    for name, done in (("resnet56-standard", True), ("mbv2/pof-s0/train", False)):
        d = out / name
        d.mkdir(parents=True)
        (d / "config.yaml").write_text("model: x\n")
        (d / "metrics.jsonl").write_text('{"epoch": 30, "test_top1": 0.8877}\n')
        if done:
            (d / "final.safetensors").write_bytes(b"")
    cmd = {"cmd": "/py -m pof train --config /gpu/pof/recipes/r.yaml --out "
                  "/gpu/pof/runs/at_scale/resnet56-standard", "wall_s": 368.0, "host": "H200"}
    arm = {"cmd": "/py -m pof train --init /cpu/runs/at_scale/resnet56-standard/final."
                  "safetensors --out /cpu/runs/at_scale/r56/gmp-s0", "wall_s": 9e3, "host": "CPU"}
    (out / "commands.jsonl").write_text(json.dumps(cmd) + "\n" + json.dumps(arm) + "\n")
    args = argparse.Namespace(out=out, docs=docs)
    for _ in range(2):  # a second report adds nothing
        dest = at_scale.archive_runs(args)
    assert (dest / "resnet56-standard" / "metrics.jsonl").is_file()
    assert not (dest / "mbv2").exists()  # unfinished: not archived
    assert len((dest / "commands.jsonl").read_text().splitlines()) == 2
    row = next(x for x in at_scale.starting_points(args) if x.startswith("| resnet56 |"))
    assert "| 88.77 | 30 | H200 | 368 s |" in row  # an arm's --init is not its pretrain
    assert "`pof train --config recipes/r.yaml --out runs/at_scale/resnet56-standard`" in row


def test_targets_without_their_arms_say_so():
    otf = load_on_the_fly()
    row = {"arm": "pof-range", "seed": 0, "bn": True, "sparsity": 0.0, "recover": "dense",
           "top1": 0.85}
    assert otf.targets([row]) == ["No target has all its arms finished yet."]
    std = {**row, "arm": "standard", "top1": 0.87}
    assert "| pof range dense within 0.5 of standard |" in otf.targets([row, std])[2]


def test_kept_checkpoints_section_names_each_models_verification(tmp_path):
    """ResNet-20 keeps three arms, a larger model its range model alone; the results page
    lists each model's verified checkpoints, or says how to make them."""
    import argparse

    at_scale, otf = load_bench("at_scale"), load_on_the_fly()
    assert otf.kept_arms(argparse.Namespace(model="resnet20")) == otf.KEPT_ARMS
    assert otf.kept_arms(argparse.Namespace(model="resnet56")) == ("pof-range",)
    ns = argparse.Namespace(model="resnet56", docs=tmp_path)
    assert otf.kept_path(ns, "pof-range").parent == tmp_path / "checkpoints" / \
        "on_the_fly_resnet56"
    otf.kept_path(ns, "pof-range").parent.mkdir(parents=True)
    (otf.kept_path(ns, "pof-range").parent / "verify.json").write_text(json.dumps(
        {"date": "2026-11-29", "runs": [{"checkpoint": "resnet56-pof-range-s0.safetensors",
                                         "cells": 6, "max_diff": 0.01, "command": "pof sweep"}]}))
    text = "\n".join(at_scale.kept_section(argparse.Namespace(docs=tmp_path)))
    assert "resnet20: none verified yet (`python bench/on_the_fly.py --keep`" in text
    assert "`python bench/on_the_fly.py --verify --model resnet56` on 2026-11-29" in text
    assert "- resnet56-pof-range-s0.safetensors: largest difference 0.01 points over 6" in text


def test_mobilenet_page_with_only_conventional_runs_archived(tmp_path):
    """Before GMP and pof have run, the page shows the conventional arm, no target and an
    unknown training budget (it crashed on formatting '?' before)."""
    import argparse

    at_scale = load_bench("at_scale")
    _fake_run(tmp_path / "at_scale" / "mobilenet_v2_cifar-standard", 0.88, 30)
    _fake_run(tmp_path / "at_scale" / "mbv2" / "conventional-s0" / "ft", 0.84, 4)
    page = at_scale.mbv2_page(argparse.Namespace(docs=tmp_path))
    assert "B = ? training epochs (GMP, pof) and F = 4 fine-tuning epochs" in page
    assert "| conventional | 84.00 (seeds: 84.00) | 4.00 | – |" in page
    assert "Target" not in page


def test_channel_rounding_times_exact_and_rounded_widths_side_by_side(tmp_path, capsys):
    """bench/channel_rounding.py: every width exported exact and rounded to 8 and 16, timed
    in one run; the rounded rows keep multiples of 8 and 16 channels."""
    from pof.cli import main

    run = tmp_path / "run"
    assert main(["train", "--model", "small_cnn", "--data", "digits", "--penalty", "pof",
                 "--structure", "channel", "--sparsity", "0:0.5", "--max-steps", "1",
                 "--batch-size", "32", "--workers", "0", "--no-progress",
                 "--out", str(run)]) == 0
    bench = load_bench("channel_rounding")
    out = tmp_path / "r.json"
    bench.main([str(run / "last.safetensors"), "--widths", "0,0.3", "--repeats", "1",
                "--no-accuracy", "--out", str(out)])
    rec = json.loads(out.read_text())
    assert {(r["sparsity"], r["round_to"], r["batch"]) for r in rec["rows"]} == {
        (k, n, b) for k in (0.0, 0.3) for n in (1, 8, 16) for b in (1, 64)}
    assert rec["round_to"] == [8, 16]
    exact = next(r for r in rec["rows"] if r["sparsity"] == 0.3 and r["round_to"] == 1)
    for n in (8, 16):
        rounded = next(r for r in rec["rows"] if r["sparsity"] == 0.3 and r["round_to"] == n)
        assert all(c % n == 0 for c in rounded["channels"][:-1])
        assert rounded["channels"] != exact["channels"]
    assert len(bench.table(rec)) == 2 + 2 * 3
    assert bench.noise(rec) is not None and bench.noise(rec) >= 0
    with pytest.raises(SystemExit):  # a missing checkpoint: one line, no traceback
        bench.main([str(tmp_path / "nope.safetensors"), "--no-accuracy"])
    assert "no checkpoint at" in capsys.readouterr().err


def test_structured_report_states_each_range_variant_against_the_best_dedicated(tmp_path):
    """bench/structured_range.py --report-only: the frozen-teacher range arm gets its own
    column and target line, gaps are against the best dedicated arm, and an archived
    rounding record becomes a section of the page."""
    bench = load_bench("structured_range")
    root = tmp_path / "structured"

    def put(name: str, rows: list[dict]) -> None:
        (root / name).mkdir(parents=True)
        (root / name / "deploy.json").write_text(json.dumps(rows))

    put("resnet20-range-b4-s0", [{"sparsity": k, "top1": t, "params": p} for k, t, p in
                                 ((0.0, 85.0, 100), (0.25, 83.0, 60), (0.5, 81.0, 30))])
    put("resnet20-rangeinit-b4-s0", [{"sparsity": k, "top1": t, "params": p} for k, t, p in
                                     ((0.0, 85.5, 100), (0.25, 84.5, 60), (0.5, 81.5, 30))])
    put("resnet20-pof0.25-b4-s0", [{"sparsity": 0.25, "top1": 85.0, "params": 60}])
    put("resnet20-tp0.5-b4-s0", [{"sparsity": 0.5, "top1": 82.0, "params": 30}])
    rows = [{"sparsity": k, "round_to": n, "batch": 64, "ms": ms, "speedup": 10 / ms,
             "params": 1, "channels": ch} for k, n, ms, ch in
            ((0.0, 1, 10.0, [16, 10]), (0.0, 8, 10.0, [16, 10]),
             (0.5, 1, 6.0, [8, 10]), (0.5, 8, 5.0, [8, 10]))]
    (root / "rounding-resnet20.json").write_text(json.dumps({
        "command": "python bench/channel_rounding.py x", "round_to": 8, "runtime": "ort",
        "machine": "m", "repeats": 3, "date": "d", "note": "", "rows": rows}))
    table = [{"sparsity": 0.0, "round_to": 1, "channels": [16, 32]},
             {"sparsity": 0.5, "round_to": 16, "channels": [16, 16]}]
    (root / "speedup-resnet20.json").write_text(json.dumps({
        "met": True, "top1": 82.5, "command": "pof prune x --speedup 2", "latency": {
            "sparsity": 0.5, "round_to": 16, "ms": 4.0, "dense_ms": 10.0, "batch": 64,
            "speedup": 2.5, "machine": "m", "table": table}}))
    args = bench.argparse.Namespace(docs=tmp_path)
    page = bench.report(args)
    assert ("`pof prune x --speedup 2` picked 50% of channels removed, kept channels rounded "
            "to a multiple of 16 (33.3% of the conv channels removed): 4.00 ms vs dense 10.00 "
            "ms at batch 64 (2.50x; target at most half the dense latency: met)") in page
    assert "| range model | range, frozen teacher | pof for this width |" in page
    assert ("- 25% of channels: range model 83.00 (1 seed(s)) vs best dedicated (pof) 85.00: "
            "2.00 behind (target: at most 1.0 behind: missed).") in page
    assert ("- 25% of channels: range, frozen teacher 84.50 (1 seed(s)) vs best dedicated "
            "(pof) 85.00: 0.50 behind (target: at most 1.0 behind: met).") in page
    assert "range, frozen teacher 81.50 (1 seed(s)) vs best dedicated (TP + FT) 82.00" in page
    assert "### Widths rounded to a multiple of 8" in page
    assert "| 50% | exact | 30.8% | 6.00 | 1.67x | – | – | – |" in page
    assert "| 50% | 8 | 30.8% | 5.00 | 2.00x | – | – | – |" in page
    assert "the dense model's identical exports timed 0% apart" in page
    assert ("- 50% at batch 64, faster than dense in onnxruntime: 1.67x (rounding run) "
            "(target >= 2: missed).") in page


def test_structured_bench_records_the_starting_model(tmp_path):
    """bench/structured_range.py: the starting model's top-1 is measured once (pof eval), the
    pof run folder that trained it keeps its config and metrics in the archive, and the page
    names it."""
    from pof.cli import main

    bench = load_bench("structured_range")
    run = tmp_path / "runs" / "small-pretrain"
    assert main(["train", "--model", "small_cnn", "--data", "digits", "--max-steps", "3",
                 "--batch-size", "32", "--workers", "0", "--no-progress",
                 "--out", str(run)]) == 0
    args = bench.argparse.Namespace(docs=tmp_path / "docs", data="digits", device=None)
    log = tmp_path / "commands.jsonl"
    bench.record_start("small_cnn", str(run / "last.safetensors"), args, log)
    rec = json.loads((tmp_path / "docs" / "structured" / "start-small_cnn.json").read_text())
    assert 0 <= rec["top1"] <= 100 and rec["trained"] == "small-pretrain"
    kept = tmp_path / "docs" / "structured" / "small-pretrain"
    assert (kept / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()
    assert " -m pof eval " in json.loads(log.read_text().splitlines()[0])["cmd"]
    bench.record_start("small_cnn", "/nowhere.safetensors", args, log)  # once: not re-run
    assert len(log.read_text().splitlines()) == 1
    (kept.parent / "small_cnn-range-b1-s0").mkdir()
    (kept.parent / "small_cnn-range-b1-s0" / "deploy.json").write_text(json.dumps(
        [{"sparsity": 0.0, "top1": 50.0, "params": 10}]))
    page = bench.report(args)
    assert (f"Starting model (small_cnn): `{rec['checkpoint']}`, top-1 {rec['top1']:.2f}%; "
            "trained by pof, its config and metrics in `structured/small-pretrain/`.") in page


def test_structured_page_and_readme_put_mobilenet_after_resnet(tmp_path):
    """bench/structured_range.py: MobileNetV2-CIFAR (frozen-teacher range and TP only) gets
    its section after ResNet-20's and its own README table, best dedicated = TP + FT."""
    bench = load_bench("structured_range")
    root = tmp_path / "structured"
    for name, rows in (
            ("resnet20-range-b4-s0", [(0.0, 87.0, 100), (0.5, 81.0, 30)]),
            ("mobilenet_v2_cifar-rangeinit-b4-s0", [(0.0, 90.0, 200), (0.25, 88.0, 120),
                                                    (0.5, 85.0, 60)]),
            ("mobilenet_v2_cifar-tp0.5-b4-s0", [(0.5, 86.0, 60)])):
        (root / name).mkdir(parents=True)
        (root / name / "deploy.json").write_text(json.dumps(
            [{"sparsity": k, "top1": t, "params": n} for k, t, n in rows]))
    args = bench.argparse.Namespace(docs=tmp_path)
    page = bench.report(args)
    assert page.index("## resnet20, 4 epochs") < page.index("## mobilenet_v2_cifar, 4 epochs")
    assert ("- 50% of channels: range, frozen teacher 85.00 (1 seed(s)) vs best dedicated "
            "(TP + FT) 86.00: 1.00 behind") in page
    readme = "\n".join(bench.readme_table(args))
    assert readme.index("ResNet-20 from") < readme.index("MobileNetV2-CIFAR from")
    mobile = readme[readme.index("MobileNetV2-CIFAR from"):]
    assert "| channels removed | params | range, frozen teacher | best model" in mobile
    assert "| 50% | 60 | 85.00 (1) | 86.00 (TP + FT) | – | – | – |" in mobile
    assert "| 50% | 30 | 81.00 (1) | – | – | – | – |" in readme  # ResNet: self teacher only


def test_structured_latency_source_falls_back_to_the_frozen_teacher_range(tmp_path):
    """bench/structured_range.py: latency and --speedup use the self-teacher range model
    when archived, else the frozen-teacher one (same widths)."""
    bench = load_bench("structured_range")
    args = bench.argparse.Namespace(docs=tmp_path / "docs", out=tmp_path / "runs",
                                    budgets=[4.0], seeds=[0])
    assert bench.range_source("m", args).name == "m-range-b4-s0"  # nothing archived yet
    for arm in ("rangeinit", "range"):
        keep = tmp_path / "docs" / "structured" / f"m-{arm}-b4-s0"
        keep.mkdir(parents=True)
        (keep / "deploy.json").write_text("[]")
        assert bench.range_source("m", args) == tmp_path / "runs" / f"m-{arm}-b4-s0"
