"""On the fly: GMP, the sparsity-range penalty, the pruned-subnetwork loss, their CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import pof
from pof.cli import main
from pof.core.gmp import GradualPruner, cubic_sparsity
from pof.core.subnet import SubnetSampler, straight_through_prune
from pof.training.checkpoint import load_checkpoint, model_from_checkpoint
from pof.training.config import TrainConfig
from pof.training.loop import train


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def _pruned_sparsity(model: nn.Module) -> float:
    """Sparsity over every prunable layer but the first conv (which pof keeps dense)."""
    return pof.SparsityReport(pof.sparsity_report(model).layers[1:]).sparsity


def _layer_sparsity(layers: list[tuple[str, nn.Module]]) -> list[float]:
    return [(m.weight == 0).float().mean().item() for _, m in layers]


def test_cubic_schedule_ends_at_target():
    assert cubic_sparsity(0, 100, 0.9, 0.0, 0.5) == 0.0
    assert cubic_sparsity(25, 100, 0.9, 0.0, 0.5) == pytest.approx(0.9 * (1 - 0.5 ** 3))
    assert cubic_sparsity(50, 100, 0.9, 0.0, 0.5) == 0.9
    assert cubic_sparsity(99, 100, 0.9, 0.0, 0.5) == 0.9
    assert cubic_sparsity(10, 100, 0.9, 0.2, 0.5) == 0.0


def test_gmp_reaches_exact_target_per_layer_and_keeps_masks_fixed():
    torch.manual_seed(0)
    model = _net()
    gmp = GradualPruner(model, 0.7, total_steps=40, end=0.5, every=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 3, 12, 12), torch.randint(0, 10, (16,))
    seen = []
    for step in range(1, 41):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        gmp.update(step)
        seen.append(max(_layer_sparsity(gmp.layers)))
        if step == 20:
            masks = [m.parametrizations.weight[0].mask.clone() for _, m in gmp.layers]
    assert seen == sorted(seen)  # sparsity only grows
    assert _layer_sparsity(gmp.layers) == pytest.approx([0.7] * 2, abs=1e-3)
    for (_, m), before in zip(gmp.layers, masks, strict=True):
        assert torch.equal(m.parametrizations.weight[0].mask, before)  # fixed after `end`


def test_range_penalty_is_deterministic_differentiable_and_lowers_every_level():
    torch.manual_seed(0)
    model = pof.to_sphere(_net())
    pen = pof.PrunePenalty(model, (0.3, 0.9), levels=4, refresh_every=5, weight=1.0)
    assert pen.levels == pytest.approx([0.3, 0.5, 0.7, 0.9])
    a, b = pen(), pen()
    assert torch.equal(a, b) and a.requires_grad
    start = pen.level_energies()
    assert start == sorted(start)  # nested sets: higher level, more energy
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(200):
        opt.zero_grad()
        pen().backward()
        opt.step()
    end = pen.level_energies()
    assert all(e < 0.5 * s for s, e in zip(start, end, strict=True)), (start, end)
    # a string range is the same thing
    assert pof.PrunePenalty(model, "0.3:0.9").levels == pen.levels


@pytest.mark.parametrize("sparsity, form, weight", [
    (0.7, "sine", 20.0), ((0.3, 0.9), "energy", 5.0), ("0.3:0.9", "energy", 5.0)])
def test_penalty_defaults_are_the_measured_ones_everywhere(sparsity, form, weight):
    pen = pof.PrunePenalty(pof.to_sphere(_net()), sparsity)
    assert (pen.form, pen.weight) == (form, weight)
    cfg = TrainConfig(penalty="pof", sparsity=sparsity).resolved()
    assert (cfg.penalty_form, cfg.penalty_weight) == (form, weight)
    # given values win, in the library and in a recipe
    other = "energy" if form == "sine" else "sine"
    pen = pof.PrunePenalty(_net(), sparsity, weight=1.0, form=other)
    assert (pen.form, pen.weight) == (other, 1.0)
    cfg = TrainConfig(penalty="pof", sparsity=sparsity, penalty_weight=0.0,
                      penalty_form=other).resolved()
    assert (cfg.penalty_form, cfg.penalty_weight) == (other, 0.0)
    if not isinstance(sparsity, float):
        return
    from pof.integrations.driver import make_method  # HF and Lightning use it

    pen = make_method(_net(), sparsity).penalty
    assert (pen.form, pen.weight) == (form, weight)


def test_cli_range_run_records_the_range_defaults(tmp_path):
    out = tmp_path / "run"
    main(["train", "--model", "small_cnn", "--data", "digits", "--penalty", "pof",
          "--sparsity", "0.3:0.9", "--max-steps", "2",
          "--workers", "0", "--progress", "false", "--out", str(out)])
    cfg = TrainConfig.from_yaml(out / "config.yaml")
    assert (cfg.penalty_form, cfg.penalty_weight) == ("energy", 5.0)


@pytest.mark.parametrize("bad", [(0.9, 0.3), (0.5, 0.5), (0.3, 1.0), (-0.1, 0.5), "0.3:",
                                 (0.1, 0.2, 0.3)])
def test_bad_ranges_are_refused(bad):
    with pytest.raises(ValueError, match="sparsity"):
        pof.PrunePenalty(_net(), bad)


def test_subnet_forward_equals_pruned_model_and_passes_gradient_to_pruned_weights():
    torch.manual_seed(0)
    model = pof.to_sphere(_net()).eval()
    sub = SubnetSampler(model, (0.3, 0.9), recover="mean")
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        got = sub.forward(x, 0.6)
        pof.prune(model, 0.6, recover="mean")
        want = model(x)
        pof.unprune(model)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    w = torch.randn(6, 10, requires_grad=True)
    straight_through_prune(w, 0.5).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight through, pruned entries too
    assert {sub.sample(1), sub.sample(3)} == {0.9}
    assert all(0.3 <= sub.sample(s) <= 0.9 for s in range(0, 40, 2))
    assert sub.sample(4) == SubnetSampler(model, (0.3, 0.9)).sample(4)  # deterministic


def _cfg(tmp_path, name, **kw):
    base = dict(model="small_cnn", model_kwargs={"width": 8}, data="digits", epochs=1,
                batch_size=64, lr=0.05, seed=0, workers=0, progress=False, ckpt_every=1000,
                out=str(tmp_path / name))
    return TrainConfig(**{**base, **kw})


def test_gmp_run_is_a_pruned_checkpoint_that_eval_export_and_sweep_accept(tmp_path, capsys):
    out = train(_cfg(tmp_path, "gmp", penalty="gmp", sparsity=0.6, gmp_every=3))
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["gmp_sparsity"] == 0.6
    ckpt = str(out / "final.safetensors")
    model, _ = model_from_checkpoint(ckpt)
    assert _pruned_sparsity(model) == pytest.approx(0.6, abs=1e-3)
    assert main(["eval", ckpt]) == 0
    assert main(["export", ckpt, "--out", str(tmp_path / "g.safetensors")]) == 0
    assert main(["sweep", ckpt, "--sparsities", "0.3,0.8", "--out", str(tmp_path / "s")]) == 0
    rows = json.loads((tmp_path / "s" / "sweep.json").read_text())
    measured = {(r["recover"], r["sparsity"]): r["measured_sparsity"] for r in rows}
    assert measured[("zero", 0.3)] == pytest.approx(0.6, abs=1e-3)  # its zeros stay
    assert measured[("zero", 0.8)] == pytest.approx(0.8, abs=1e-3)


def test_subnet_every_takes_the_pruned_term_on_every_kth_step_only(tmp_path):
    """--subnet-every 2: plain steps between; the sandwich rule runs over the subnet steps
    (the top of the range on every other one of them)."""
    from pof.training.loop import Trainer

    run = Trainer(_cfg(tmp_path, "every", penalty="pof", sparsity="0.3:0.9",
                       subnet_every=2, max_steps=8), resume=False)
    seen = []
    pruned = run.method.sampler.pruned
    run.method.sampler.pruned = lambda s: (seen.append((run.step, s)), pruned(s))[1]
    run.run()
    assert [step for step, _ in seen] == [0, 2, 4, 6]
    assert [s for step, s in seen if (step // 2) % 2] == [0.9, 0.9]
    assert all(0.3 <= s <= 0.9 for _, s in seen)


def test_penalty_ramp_follows_the_cubic_schedule_to_the_target(tmp_path):
    from pof.training.loop import Trainer

    run = Trainer(_cfg(tmp_path, "ramp", penalty="pof", sparsity=0.8, penalty_ramp=0.5,
                       penalty_refresh=1, max_steps=12), resume=False)
    seen = []
    pen = run.method.penalty
    call = pen.forward
    pen.forward = lambda: (seen.append(pen.levels[0]), call())[1]
    run.run()
    total = run.total
    assert seen == pytest.approx([cubic_sparsity(t, total, 0.8, 0.0, 0.5) for t in range(12)])
    assert seen[0] == 0.0 and seen == sorted(seen)
    # the pruned set follows: at the last refresh it holds the scheduled fraction
    keep = torch.cat([m.flatten() for m in pen.masks])
    assert 1 - keep.float().mean().item() == pytest.approx(seen[-1], abs=0.02)


def test_penalty_ramp_needs_one_pof_target():
    with pytest.raises(ValueError, match="penalty_ramp"):
        TrainConfig(penalty="pof", sparsity="0.3:0.9", penalty_ramp=0.5)
    with pytest.raises(ValueError, match="penalty_ramp"):
        TrainConfig(penalty="gmp", sparsity=0.7, penalty_ramp=0.5)
    with pytest.raises(ValueError, match="penalty_ramp"):
        TrainConfig(penalty="pof", sparsity=0.7, penalty_ramp=0.5, penalty_weight=0.0)
    with pytest.raises(ValueError, match="penalty_ramp"):
        TrainConfig(penalty="pof", pattern="2:4", penalty_ramp=0.5)
    with pytest.raises(ValueError, match="penalty_ramp"):
        TrainConfig(penalty="pof", sparsity=0.5, structure="channel", penalty_ramp=0.5)
    with pytest.raises(ValueError, match="penalty_ramp must be"):
        TrainConfig(penalty="pof", sparsity=0.7, penalty_ramp=1.5)


def test_resume_keeps_the_recorded_penalty_when_defaults_are_not_given(tmp_path):
    """A run started with explicit values and resumed without them keeps its values."""
    from pof.training.loop import Trainer

    cfg = _cfg(tmp_path, "resume", penalty="pof", sparsity="0.3:0.9", penalty_form="sine",
               penalty_weight=20.0, max_steps=2)
    Trainer(cfg, resume=False).run()
    later = _cfg(tmp_path, "resume", penalty="pof", sparsity="0.3:0.9", max_steps=3)
    run = Trainer(later, resume=True)
    assert (run.cfg.penalty_form, run.cfg.penalty_weight) == ("sine", 20.0)
    assert (run.method.penalty.form, run.method.penalty.weight) == ("sine", 20.0)


def test_a_pruned_range_model_can_be_fine_tuned(tmp_path, capsys):
    out = train(_cfg(tmp_path, "ft", penalty="pof", sparsity="0.3:0.9", subnet_every=2))
    assert main(["prune", str(out / "final.safetensors"), "--sparsity", "0.6", "--out",
                 str(tmp_path / "p")]) == 0
    assert main(["finetune", str(tmp_path / "p" / "pruned.safetensors"), "--max-steps", "2",
                 "--progress", "false", "--workers", "0"]) == 0
    cfg = TrainConfig.from_yaml(tmp_path / "p" / "finetune" / "config.yaml")
    assert (cfg.penalty, cfg.sparsity, cfg.subnet_every) == ("none", 0.6, 1)


@pytest.mark.parametrize("penalty", ["pof", "cram"])
def test_range_model_prunes_to_any_requested_sparsity(tmp_path, capsys, penalty):
    out = train(_cfg(tmp_path, penalty, penalty=penalty, sparsity="0.3:0.9"))
    cfg = json.loads(json.dumps(
        load_checkpoint(out / "final.safetensors")[1]["config"]))
    assert cfg["sparsity"] == [0.3, 0.9]
    for s in ("0.35", "0.85"):
        assert main(["prune", str(out / "final.safetensors"), "--sparsity", s,
                     "--out", str(tmp_path / s)]) == 0
        model, _ = model_from_checkpoint(tmp_path / s / "pruned.safetensors")
        assert _pruned_sparsity(model) == pytest.approx(float(s), abs=2e-3)


@pytest.mark.parametrize("argv, needle", [
    (["--penalty", "pof", "--sparsity", "0.9:0.3"], "lo < hi"),
    (["--penalty", "pof", "--sparsity", "0.3:1.2"], "[0, 1)"),
    (["--penalty", "gmp", "--sparsity", "0.3:0.9"], "range"),
    (["--penalty", "gmp", "--gmp-start", "0.8", "--gmp-end", "0.5"], "start < end"),
    (["--penalty", "gmp", "--gmp-every", "0"], "gmp_every must be >= 1"),
    (["--subnet", "half"], "subnet"),
    (["--subnet-every", "0"], "subnet_every must be >= 1"),
    (["--penalty", "pof", "--sparsity", "0.7", "--subnet-every", "2"], "needs a pruned-subnet"),
    (["--penalty", "cram", "--sparsity", "0.3:0.9", "--subnet", "none", "--subnet-every", "2"],
     "needs a pruned-subnet"),
])
def test_train_mistakes_end_in_one_line(tmp_path, capsys, argv, needle):
    try:
        code = main(["train", "--data", "digits", "--out", str(tmp_path / "x"), *argv])
    except SystemExit as e:  # argparse: a value its type= refused
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "x").exists()


def test_bn_recal_on_a_model_without_batchnorm_is_refused_before_work(tmp_path, capsys):
    out = train(_cfg(tmp_path, "nobn", model="small_cnn", model_kwargs={"width": 8,
                                                                        "norm": False}))
    code = main(["prune", str(out / "final.safetensors"), "--sparsity", "0.5", "--bn-recal",
                 "2", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "BatchNorm" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p").exists()
