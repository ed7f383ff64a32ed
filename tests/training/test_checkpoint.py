"""Checkpoints: round trips of every pof structure, atomic writes, corruption detection."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import pof
from pof.training.checkpoint import (
    CheckpointError,
    apply_structure,
    load_checkpoint,
    load_model_state,
    load_plain_weights,
    model_from_checkpoint,
    model_only_copy,
    optimizer_state,
    save_checkpoint,
    split,
    structure,
)

ARCH = {"name": "small_cnn", "num_classes": 10, "kwargs": {"width": 8}}


def _model():
    torch.manual_seed(0)
    return pof.create_model("small_cnn", num_classes=10, width=8).eval()


def _variants():
    yield "plain", _model()
    yield "sphere", pof.to_sphere(_model())
    yield "pruned-mean", pof.prune(pof.to_sphere(_model()), 0.6, recover="mean")
    yield "folded", pof.remove(pof.prune(pof.to_sphere(_model()), 0.6, recover="mean"))
    yield "cosine", pof.to_sphere(_model(), cosine=True)


@pytest.mark.parametrize("name,model", list(_variants()), ids=lambda v: v if isinstance(v, str)
                         else "")
def test_roundtrip_keeps_outputs(tmp_path, name, model):
    x = torch.randn(2, 1, 8, 8)
    ref = model(x)
    path = save_checkpoint(tmp_path / "m.safetensors", model, {"arch": ARCH, "step": 3})
    loaded, meta = model_from_checkpoint(path)
    assert meta["step"] == 3 and meta["structure"] == structure(model)
    torch.testing.assert_close(loaded.eval()(x), ref)
    if name == "pruned-mean":  # masks survive, so it can be fine-tuned or unpruned
        assert pof.is_pruned(loaded.features[1][0])
        report = pof.sparsity_report(loaded)
        assert abs(report.layers[1].sparsity - 0.6) < 1e-2


def test_optimizer_and_extra_roundtrip(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    opt.step()
    rng = torch.get_rng_state()
    save_checkpoint(tmp_path / "c.safetensors", model, {"arch": ARCH}, opt, {"rng": rng})
    tensors, meta = load_checkpoint(tmp_path / "c.safetensors")
    assert torch.equal(split(tensors, "extra")["rng"], rng)
    opt2 = torch.optim.SGD(_model().parameters(), lr=0.5, momentum=0.9)
    opt2.load_state_dict(optimizer_state(tensors, meta))
    assert opt2.param_groups[0]["lr"] == 0.1
    for a, b in zip(opt.state.values(), opt2.state.values(), strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])


def test_model_only_copy_drops_training_state_and_keeps_outputs(tmp_path):
    model = pof.prune(pof.to_sphere(_model()), 0.6, recover="mean")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    opt.step()
    meta = {"arch": ARCH, "data": {"source": "/abs/data", "name": "x"}, "step": 7, "junk": 1}
    full = save_checkpoint(tmp_path / "full.safetensors", model, meta, opt,
                           {"penalty.mask_0": torch.ones(100)})
    copy = model_only_copy(full, tmp_path / "copy.safetensors", "../data")
    tensors, got = load_checkpoint(copy)
    assert not any(k.startswith(("optim.", "extra.")) for k in tensors)
    assert got["data"] == {"source": "../data", "name": "x"} and got["step"] == 7
    assert "optimizer" not in got and got["junk"] == 1  # other metadata kept
    assert copy.stat().st_size < full.stat().st_size
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(model_from_checkpoint(copy)[0].eval()(x), model.eval()(x))


def test_truncated_and_corrupt_files_are_detected(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", _model(), {"arch": ARCH})
    data = path.read_bytes()
    (tmp_path / "short.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "short.safetensors")
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF  # inside the tensor data: only the hash can tell
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="hash mismatch"):
        load_checkpoint(tmp_path / "flip.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    save_file({"w": torch.ones(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="without pof metadata"):
        load_checkpoint(tmp_path / "plain.safetensors")


def test_save_is_atomic_no_temp_left(tmp_path):
    save_checkpoint(tmp_path / "c.safetensors", _model(), {"arch": ARCH})
    save_checkpoint(tmp_path / "c.safetensors", _model(), {"arch": ARCH})
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]


def test_plain_weights_from_pt_safetensors_and_mismatch(tmp_path):
    model = _model()
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               tmp_path / "w.pth")
    state = load_plain_weights(tmp_path / "w.pth")
    assert set(state) == set(model.state_dict())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / "w.safetensors"))
    assert set(load_plain_weights(tmp_path / "w.safetensors")) == set(state)
    torch.save({"x": object()}, tmp_path / "evil.pt")  # needs unpickling: refused
    with pytest.raises(CheckpointError, match="cannot read"):
        load_plain_weights(tmp_path / "evil.pt")
    other = pof.create_model("small_cnn", width=16)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model_state(other, state, "w.pth")


def test_apply_structure_rejects_unknown_layer():
    with pytest.raises(CheckpointError, match="lacks"):
        apply_structure(_model(), {"nope": {"folded": True}})


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_compact_file_shrinks_with_sparsity_and_loads_back(tmp_path, sparsity):
    arch = {**ARCH, "kwargs": {"width": 32}}  # 130k weights: big enough that headers don't count
    model = pof.create_model("small_cnn", num_classes=10, width=32).eval()
    model = pof.remove(pof.prune(pof.to_sphere(model), sparsity, recover="mean"))
    x = torch.randn(2, 1, 8, 8)
    ref = model(x)
    dense = save_checkpoint(tmp_path / "d.safetensors", model, {"arch": arch})
    small = save_checkpoint(tmp_path / "c.safetensors", model, {"arch": arch}, compact=True)
    ratio = small.stat().st_size / dense.stat().st_size
    assert ratio < (1 - sparsity) + 0.1, ratio
    loaded, _ = model_from_checkpoint(small)
    torch.testing.assert_close(loaded.eval()(x), ref)


def test_bad_widths_metadata_is_a_checkpoint_error():
    from pof.core.widths import apply_widths

    model = pof.create_model("resnet20")
    with pytest.raises(CheckpointError, match="lacks"):
        apply_widths(model, {"nope": {"features": 3}}, "x.safetensors")
    with pytest.raises(CheckpointError, match="malformed"):
        apply_widths(model, {"bn1": {"features": "8"}}, "x.safetensors")
    with pytest.raises(CheckpointError, match="mapping"):
        apply_widths(model, [1, 2], "x.safetensors")
