"""Channel ranges (issue 24): one model for every width, deployed by measured speed, ONNX
that carries what a deployer needs."""

import copy
import json

import pytest
import torch
from helpers import train_steps

import pof
from pof.core.channel_subnet import ChannelSubnetSampler
from pof.errors import ConfigError, PofError
from pof.models import create_model

pytest.importorskip("torch_pruning")
pytest.importorskip("onnxruntime")

X = torch.zeros(1, 1, 8, 8)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return pof.to_sphere(create_model("small_cnn"))


def test_narrowed_pass_is_the_channel_pruned_model():
    """The training pass at width 1 - s computes what prune_channels(s) + removal deploys."""
    model = _model().eval()
    sampler = ChannelSubnetSampler(model, pof.channel_groups(model, X), (0.0, 0.5), "zero")
    x = torch.randn(6, 1, 8, 8)
    for s in (0.25, 0.5):
        with torch.no_grad(), sampler.pruned(s):
            narrow = model(x)
        deployed = pof.remove_channels(pof.prune_channels(copy.deepcopy(model), s, X))
        with torch.no_grad():
            torch.testing.assert_close(narrow, deployed(x), atol=1e-5, rtol=1e-5)
        assert deployed.features[1][0].out_channels == 64 - round(s * 64)
    with torch.no_grad():  # hooks gone: the full width again
        torch.testing.assert_close(model(x), copy.deepcopy(model)(x))


def test_widths_are_nested_and_mean_fill_is_the_batch_mean():
    model = _model()
    sampler = ChannelSubnetSampler(model, pof.channel_groups(model, X), "0:0.5", "mean")
    masks = {s: sampler.keep_masks(s) for s in (0.0, 0.125, 0.25, 0.5)}
    for name, keep in masks[0.5].items():
        assert int(keep.sum()) == keep.numel() - round(0.5 * keep.numel())
        assert bool((masks[0.125][name] >= masks[0.25][name]).all())  # a prefix of one order
        assert bool((masks[0.25][name] >= keep).all()) and bool(masks[0.0][name].all())
    seen = {}
    with sampler.pruned(0.5):  # a hook after the sampler's: what fc reads
        h = model.fc.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
        model(torch.randn(8, 1, 8, 8))
    h.remove()
    gone = ~masks[0.5]["fc"]
    torch.testing.assert_close(seen["x"][:, gone], seen["x"][:, gone].mean(0, keepdim=True)
                               .expand(8, -1))


def test_channel_range_method_trains_both_widths():
    """ChannelRange: nested channel-penalty levels, the narrow half-batch distilled from
    the full width; BatchNorm statistics follow the full width only."""
    model = _model()
    method = pof.ChannelRange(model, "0:0.5", example_inputs=X)
    assert method.penalty.levels == pytest.approx([0, 1 / 6, 1 / 3, 0.5])
    assert method.distill == 0.0 and isinstance(method.sampler, ChannelSubnetSampler)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    e0 = method.logs()["level_energy"]
    train_steps(model, method, x, y, 3)
    e1 = method.logs()["level_energy"]
    assert e1[0] == 0 and e1[-1] < e0[-1]  # the penalty empties the removed channels
    assert method.state_dict()["steps"] == 3
    with pytest.raises(PofError, match="would remove all 32 channels of layer 'features.0.0'"):
        pof.ChannelRange(_model(), "0:0.99", example_inputs=X)


def test_config_takes_a_channel_range():
    from pof.training.config import TrainConfig

    cfg = TrainConfig(penalty="pof", structure="channel", sparsity="0:0.5")
    assert cfg.sparsity == [0.0, 0.5] and cfg.subnet_mode == "split"
    with pytest.raises(ConfigError, match="one sparsity, not a range"):
        TrainConfig(penalty="pof", pattern="2:4", sparsity="0.3:0.7")


def test_pick_width_and_candidates():
    from pof.export.latency import candidate_widths, pick_width

    rows = [{"sparsity": s, "round_to": 1, "params": round(100 * (1 - s)), "ms": ms,
             "speedup": 4.0 / ms}
            for s, ms in ((0.0, 4.0), (0.25, 2.5), (0.375, 1.9), (0.5, 2.0))]
    assert pick_width(rows, speedup=2.0)["sparsity"] == 0.375  # the widest that meets it
    assert pick_width(rows, latency_ms=3.0)["sparsity"] == 0.25
    assert pick_width(rows, speedup=3.0) is None
    # a rounded width that keeps more parameters and is as fast wins over the exact one
    rows.append({"sparsity": 0.5, "round_to": 16, "params": 70, "ms": 1.95, "speedup": 4 / 1.95})
    assert pick_width(rows, speedup=2.0)["round_to"] == 16
    with pytest.raises(PofError):
        pick_width(rows)
    assert candidate_widths(0, 0.5) == [0, 0.0625, 0.125, 0.1875, 0.25, 0.3125, 0.375,
                                        0.4375, 0.5]


def _fake_timing(monkeypatch):
    """Deterministic latency: a width removing s of the channels runs in (1 - s) x dense,
    rounded or not (as a runtime that runs blocks of channels would)."""
    import pof.export.latency as lat

    monkeypatch.setattr(lat, "interleaved_medians", lambda runners, repeats, sample_s=0.05: {
        (s, r): 1e-3 * (1 - s) for s, r in runners})


def test_tiny_channel_range_deployed_at_two_widths_by_speedup(tmp_path, capsys, monkeypatch):
    """Done-when of issue 24: a channel-range model trained a few steps on digits, deployed
    through --speedup at two widths (the timing faked to be deterministic; the real one in
    the test below), its ONNX read back with onnxruntime."""
    from pof.cli import main
    from pof.export.onnx import read_metadata
    from pof.training.checkpoint import model_from_checkpoint, read_meta

    run = tmp_path / "run"
    assert main(["train", "--model", "small_cnn", "--data", "digits", "--penalty", "pof",
                 "--structure", "channel", "--sparsity", "0:0.5", "--subnet-distill", "1",
                 "--max-steps", "3", "--batch-size", "32", "--workers", "0", "--no-progress",
                 "--out", str(run)]) == 0
    ckpt = run / "last.safetensors"
    assert read_meta(ckpt)["config"]["sparsity"] == [0.0, 0.5]
    _fake_timing(monkeypatch)
    widths = {}
    # 1 / (1 - s) >= 1.5: s >= 1/3. Exactly, 0.375 keeps 40 of 64 channels; its rounding
    # to 16 keeps 48, equally fast here, so the default (--round-to 1,8,16) takes it;
    # --round-to 1 measures exact widths only.
    for speedup, rounds, want in (("1.0", [], (0.0, 1, 64)), ("1.5", [], (0.375, 16, 48)),
                                  ("1.5", ["--round-to", "1"], (0.375, 1, 40))):
        out = tmp_path / f"x{speedup}{len(rounds)}"
        assert main(["prune", str(ckpt), "--structure", "channel", "--speedup", speedup,
                     *rounds, "--bn-recal", "1", "--onnx", "--out", str(out)]) == 0
        text = capsys.readouterr().out
        assert "| channels removed |" in text and "**<-**" in text
        assert ("rounded to" in text) == (not rounds)
        meta = read_meta(out / "pruned.safetensors")
        assert meta["pruned"]["sparsity"] == want[0] == meta["latency"]["sparsity"]
        assert meta["pruned"]["round_to"] == want[1] == meta["latency"]["round_to"]
        assert meta["latency"]["request"] == {"speedup": float(speedup)}
        table = meta["latency"]["table"]
        assert sorted({r["sparsity"] for r in table}) == [k / 16 for k in range(9)]
        assert len({(tuple(r["channels"]), r["params"]) for r in table}) == len(table)
        assert {r["round_to"] for r in table} == ({1} if rounds else {1, 8, 16})
        model, _ = model_from_checkpoint(out / "pruned.safetensors")
        widths[want] = model.features[1][0].out_channels
        onnx_meta = read_metadata(out / "model.onnx")
        width = float(onnx_meta["pof.width"])  # exact: 1 - s to a channel; rounded: wider
        assert (width == pytest.approx(1 - want[0], abs=0.02) if want[1] == 1
                else width > 1 - want[0] + 0.02)
        assert json.loads(onnx_meta["pof.classes"]) == [str(i) for i in range(10)]
        assert json.loads(onnx_meta["pof.latency"])["speedup"] == pytest.approx(
            1 / (1 - want[0]))
    assert widths == {w: w[2] for w in widths}
    assert main(["prune", str(ckpt), "--structure", "channel", "--latency-ms", "0.7",
                 "--no-eval", "--recover", "zero", "--out", str(tmp_path / "ms")]) == 0
    assert read_meta(tmp_path / "ms" / "pruned.safetensors")["latency"]["sparsity"] == 0.3125
    assert main(["prune", str(ckpt), "--structure", "channel", "--speedup", "5",
                 "--out", str(tmp_path / "none")]) == 2  # 2x at most in the range
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no measured width meets --speedup 5" in err
    assert not (tmp_path / "none").exists()
    assert main(["prune", str(ckpt), "--speedup", "2", "--out", str(tmp_path / "w")]) == 2
    assert "add --structure channel" in capsys.readouterr().err
    # --round-to 8: every group keeps a multiple of 8 (64 - round(0.3 * 64) = 45 -> 48)
    out = tmp_path / "r8"
    assert main(["prune", str(ckpt), "--structure", "channel", "--sparsity", "0.3",
                 "--round-to", "8", "--no-eval", "--recover", "zero", "--onnx",
                 "--out", str(out)]) == 0
    model, _ = model_from_checkpoint(out / "pruned.safetensors")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs[:-1])
    assert model.features[1][0].out_channels == 48
    pruned = read_meta(out / "pruned.safetensors")["pruned"]
    assert pruned["round_to"] == 8 and 0 < pruned["channels_removed"] < 0.3
    assert float(read_metadata(out / "model.onnx")["pof.width"]) == pytest.approx(
        1 - pruned["channels_removed"], abs=1e-6)
    assert main(["prune", str(ckpt), "--sparsity", "0.3", "--round-to", "8",
                 "--out", str(tmp_path / "r")]) == 2
    assert "--round-to applies to --structure channel only" in capsys.readouterr().err


def test_kept_channels_round_to_a_multiple():
    from pof.core.channels import kept_channels

    assert [kept_channels(64, r) for r in (0, 0.3, 0.5)] == [64, 45, 32]
    assert [kept_channels(64, r, 8) for r in (0, 0.3, 0.5, 0.95)] == [64, 48, 32, 8]
    assert [kept_channels(16, r, 8) for r in (0.125, 0.25, 0.3)] == [16, 16, 8]
    assert kept_channels(48, 0.25, 8) == 40 and kept_channels(16, 0.25, 8) == 16  # ties: up
    assert kept_channels(6, 0.5, 8) == 6  # a group below the multiple keeps what it has
    assert kept_channels(16, 1.0, 8) == 0  # the caller refuses an emptied group


def test_measured_latency_and_onnx_metadata(tmp_path, capsys):
    """Real onnxruntime timing (dense always meets --speedup 1); `pof export` writes the
    input normalisation, classes, width and sparsity, read back with onnxruntime."""
    from pof.cli import main
    from pof.export.onnx import read_metadata
    from pof.training.checkpoint import save_checkpoint

    data = {"source": "digits", "image_size": [1, 8, 8], "mean": [0.3], "std": [0.4],
            "classes": [f"c{i}" for i in range(10)]}
    src = save_checkpoint(tmp_path / "m.safetensors", _model(), {
        "arch": {"name": "small_cnn", "num_classes": 10, "kwargs": {}}, "data": data})
    assert main(["prune", str(src), "--structure", "channel", "--speedup", "1",
                 "--candidates", "0.5", "--repeats", "2", "--recover", "zero", "--no-eval",
                 "--onnx", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out and "batch 1" in out and "| 50.0% | " in out
    meta = read_metadata(tmp_path / "p" / "model.onnx")
    assert meta["pof.structure"] == "channel" and meta["pof.sparsity"] == "0"
    lat = json.loads(meta["pof.latency"])
    assert lat["ms"] > 0 and lat["batch"] == 1 and "cores" in lat["machine"]
    assert main(["export", str(src), "--format", "onnx", "--out", str(tmp_path / "d.onnx")]) == 0
    meta = read_metadata(tmp_path / "d.onnx")
    assert json.loads(meta["pof.mean"]) == [0.3] and json.loads(meta["pof.std"]) == [0.4]
    assert json.loads(meta["pof.classes"])[3] == "c3" and meta["pof.arch"] == "small_cnn"
    assert meta["pof.structure"] == "dense" and meta["pof.width"] == "1"
    assert int(meta["pof.params"]) == sum(p.numel() for p in create_model("small_cnn")
                                          .parameters())


def _bench():
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).parents[2] / "bench"
    if str(bench) not in sys.path:
        sys.path.insert(0, str(bench))  # as for a script run from there (import runner)
    spec = importlib.util.spec_from_file_location("bench_structured_range",
                                                  bench / "structured_range.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_page_is_built_from_archived_runs(tmp_path):
    """bench/structured_range.py: the page's table and targets come from the archive alone
    (means over seeds, the best dedicated model per width, the measured speed-up)."""
    bench = _bench()
    root = tmp_path / "structured"

    def keep(name, rows):
        (root / name).mkdir(parents=True)
        (root / name / "deploy.json").write_text(json.dumps(rows))

    for seed, (a, b) in enumerate(((84.0, 80.0), (85.0, 81.0))):
        keep(f"resnet20-range-b4-s{seed}", [
            {"sparsity": 0.0, "top1": 87.0, "params": 1000},
            {"sparsity": 0.25, "top1": a, "params": 600},
            {"sparsity": 0.5, "top1": b, "params": 250}])
        keep(f"resnet20-pof0.25-b4-s{seed}", [{"sparsity": 0.25, "top1": 85.0, "params": 600}])
        keep(f"resnet20-tp0.5-b4-s{seed}", [{"sparsity": 0.5, "top1": 82.5, "params": 250,
                                             "top1_no_ft": 10.0}])
    keep("resnet20-tpgn0.5-b4-s0", [{"sparsity": 0.5, "top1": 81.0, "params": 250}])
    (root / "latency-resnet20.json").write_text(json.dumps({
        "runtime": "onnxruntime", "machine": "m", "repeats": 3, "date": "d", "source": "s",
        "rows": [{"sparsity": s, "batch": bt, "ms": ms, "speedup": 4.0 / ms}
                 for bt in (1, 64) for s, ms in ((0.0, 4.0), (0.25, 3.0), (0.5, 1.6))]}))
    args = bench.main.__globals__["argparse"].Namespace(docs=tmp_path)
    page = bench.report(args)
    assert "| 25% | 600 | 84.50 ± 0.50 (2) | 85.00 ± 0.00 (2) | – | – | – | 3.00 |" in page
    assert ("| 50% | 250 | 80.50 ± 0.50 (2) | – | 82.50 ± 0.00 (2) | 81.00 (1) | – | 1.60 | "
            "1.60 | 2.50x |" in page)
    assert "range model 84.50 (2 seed(s)) vs best dedicated (pof) 85.00: 0.50 behind" in page
    assert "(TP + FT) 82.50: 2.00 behind (target: at most 1.0 behind: missed)" in page
    assert "faster than dense in onnxruntime: 2.50x (latency table) (target >= 2: met)" in page
    readme = bench.readme_table(args)
    assert "| 25% | 600 | 84.50 ± 0.50 (2) | 85.00 (pof 25%) | – | 3.0 | 1.33x |" in readme
    assert "| 50% | 250 | 80.50 ± 0.50 (2) | 82.50 (TP + FT) | – | 1.6 | 2.50x |" in readme


def test_bench_script_parses_its_flags():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[2] / "bench" / "structured_range.py"
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "--budgets" in out and "--report-only" in out


def test_width_that_would_empty_a_group_is_skipped_and_pattern_metadata():
    from pof.export.latency import width_latencies
    from pof.export.onnx import deploy_metadata

    model = _model()
    rows = width_latencies(model, X, [0.5, 0.99], repeats=1)  # 0.99 empties every group
    assert [r["sparsity"] for r in rows] == [0.0, 0.5] and rows[0]["speedup"] == 1.0
    assert rows[1]["params"] < rows[0]["params"]
    assert not pof.is_pruned(model) and model.features[1][0].out_channels == 64  # untouched
    # rounded to 1, 8 and 16 (the dense model rounds to itself: measured once); 0.3 keeps
    # 22 of 32 exactly, 24 rounded to 8, 16 rounded to 16
    rows = width_latencies(model, X, [0.3], round_to=(1, 8, 16), repeats=1)
    assert [(r["sparsity"], r["round_to"]) for r in rows] == [(0.0, 1), (0.3, 1), (0.3, 8),
                                                              (0.3, 16)]
    assert [r["channels"] for r in rows] == [[32, 64, 64, 128], [22, 45, 45, 90],
                                             [24, 48, 48, 88], [16, 48, 48, 96]]
    rows = width_latencies(model, X, [0.5], round_to=(8, 16), repeats=1)
    assert len(rows) == 2  # 0.5 keeps 16 / 32 / 64: multiples of 8 and 16 already
    rows = width_latencies(model, X, [0.3], round_to="8", repeats=1)  # no exact 0.3
    assert [(r["sparsity"], r["round_to"]) for r in rows] == [(0.0, 1), (0.3, 8)]
    # several batches, every rounding measured (the bench's noise floor): one set per batch
    rows = width_latencies(model, X, [0.5], batch=(1, 2), round_to=(1, 8), repeats=1,
                           dedupe=False)
    assert [(r["batch"], r["sparsity"], r["round_to"]) for r in rows] == [
        (b, s, r) for b in (1, 2) for s in (0.0, 0.5) for r in (1, 8)]
    assert [r["speedup"] for r in rows if (r["sparsity"], r["round_to"]) == (0.0, 1)] == [1, 1]
    with pytest.raises(PofError, match="at least one batch"):
        width_latencies(model, X, [0.5], batch=(), repeats=1)
    meta = deploy_metadata({"pruned": {"pattern": "2:4", "structure": "weight"}})
    assert (meta["pof.sparsity"], meta["pof.width"], meta["pof.pattern"]) == ("0.5", "1", "2:4")


def test_round_to_lists(tmp_path, capsys):
    """--round-to: one N with --sparsity, a list to measure with --speedup; bad ones refused
    in one line."""
    from pof.cli import main
    from pof.core.channels import round_to_list
    from pof.workflows import PruneOptions

    assert round_to_list("16,8,8") == [8, 16] and round_to_list(8) == [8]
    assert round_to_list(None) is None
    assert PruneOptions("c", "o", speedup=2.0, round_to="1,16").round_to == [1, 16]
    with pytest.raises(PofError, match="takes one N with --sparsity, got 8,16"):
        PruneOptions("c", "o", sparsity=0.3, round_to=[8, 16])
    for bad in ("x", "", "0", [0], 1.5):
        with pytest.raises(PofError, match="round_to"):
            round_to_list(bad)
    src = tmp_path / "m.safetensors"
    from pof.training.checkpoint import save_checkpoint

    save_checkpoint(src, _model(), {"arch": {"name": "small_cnn", "num_classes": 10,
                                             "kwargs": {}}})
    for args, err in ((["--sparsity", "0.3", "--round-to", "8,16"], "takes one N"),
                      (["--sparsity", "0.3", "--round-to", "8x"], "round_to"),
                      (["--speedup", "2", "--round-to", "0"], "round_to")):
        try:  # argparse exits on a bad value; the run itself returns 2
            code = main(["prune", str(src), "--structure", "channel", *args, "--no-eval",
                         "--out", str(tmp_path / "o")])
        except SystemExit as e:
            code = e.code
        assert code == 2
        text = capsys.readouterr().err
        assert err in text and text.count("\n") == 1 and "Traceback" not in text


def test_speed_search_leaves_the_callers_options_alone(tmp_path, monkeypatch):
    """run_prune picks the width on a copy: the same PruneOptions run twice measures the same
    candidates and picks the same width."""
    from pof.training.checkpoint import read_meta, save_checkpoint
    from pof.workflows import PruneOptions
    from pof.workflows.prune import run_prune

    src = save_checkpoint(tmp_path / "m.safetensors", _model(), {
        "arch": {"name": "small_cnn", "num_classes": 10, "kwargs": {}}})
    _fake_timing(monkeypatch)
    opts = PruneOptions(str(src), str(tmp_path / "a"), speedup=1.5, structure="channel",
                        recover="zero", no_eval=True, candidates=[0.25, 0.375])
    tables = []
    for out in ("a", "b"):
        opts.out = str(tmp_path / out)
        meta = read_meta(run_prune(opts))
        tables.append([(r["sparsity"], r["round_to"]) for r in meta["latency"]["table"]])
        assert (meta["pruned"]["sparsity"], meta["pruned"]["round_to"]) == (0.375, 16)
    assert opts.round_to is None and opts.sparsity is None  # as given
    assert tables[0] == tables[1] and {r for _, r in tables[0]} == {1, 8, 16}
