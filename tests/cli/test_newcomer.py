"""Issue 25: sweeps of models saved sparse, ``pof.load`` / ``pof.save`` round trips, and
Hugging Face ``save_pretrained`` of a mean-recovered model."""

from __future__ import annotations

import json

import pytest
import torch

import pof
from pof.cli import main


def _saved_sparse(path, sparsity=0.6):
    """A small_cnn checkpoint saved with prune masks on (what a GMP run writes)."""
    from pof.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = pof.create_model("small_cnn", num_classes=10, width=8)
    pof.prune(model, sparsity, recover="zero")
    return save_checkpoint(path, model, {
        "arch": {"name": "small_cnn", "num_classes": 10, "kwargs": {"width": 8}},
        "data": {"source": "digits"}})


def test_sweep_puts_a_model_saved_sparse_at_its_sparsity_as_saved(tmp_path, monkeypatch):
    import pof.report as report

    ckpt = _saved_sparse(tmp_path / "gmp.safetensors")
    figs = []
    monkeypatch.setattr(report, "_save", lambda fig, path: figs.append(fig))
    assert main(["sweep", str(ckpt), "--sparsities", "0.8", "--recover", "zero",
                 "--out", str(tmp_path / "s")]) == 0
    table = (tmp_path / "s" / "sweep.md").read_text().splitlines()
    assert table[0] == "| model | recovery | as saved | 80% |"
    assert table[2].startswith("| gmp | zero | ") and " @ 60.0% |" in table[2]
    rows = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert rows[0]["measured_sparsity"] == pytest.approx(0.6, abs=1e-3)
    ax = figs[0].axes[0]
    point = next(line for line in ax.lines if line.get_label() == "gmp as saved (60.0%)")
    assert point.get_xdata()[0] == pytest.approx(60.0, abs=0.1)  # not at 0%
    assert not any("dense" in line.get_label() for line in ax.lines)


def _registry(name, **kw):
    def make():
        torch.manual_seed(0)
        return pof.create_model(name, **kw), torch.randn(2, *_INPUTS.get(name, (3, 32, 32)))
    return make


_INPUTS = {"small_cnn": (1, 8, 8)}


def _bert():
    tr = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tr.BertConfig(vocab_size=100, hidden_size=32, num_labels=2, num_hidden_layers=1,
                        num_attention_heads=4, intermediate_size=64)
    return tr.BertForSequenceClassification(cfg), torch.randint(100, (2, 8))


def _gpt2():
    tr = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tr.GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=4, n_positions=16)
    return tr.GPT2LMHeadModel(cfg), torch.randint(100, (2, 8))


def _encoder():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, dropout=0.0)
    return torch.nn.Sequential(torch.nn.TransformerEncoder(layer, 1), torch.nn.Flatten(),
                               torch.nn.Linear(16 * 5, 3)), torch.randn(2, 5, 16)


KINDS = {"small_cnn": _registry("small_cnn", num_classes=10, width=8),
         "resnet20": _registry("resnet20", num_classes=10),
         "mobilenet_v2_cifar": _registry("mobilenet_v2_cifar", num_classes=10, width_mult=0.25),
         "vit_tiny": _registry("vit_tiny", num_classes=10),
         "hf_bert": _bert, "hf_gpt2": _gpt2, "transformer_encoder": _encoder}


def _logits(model, x):
    model.eval()
    with torch.no_grad():
        y = model(x)
    return y.logits if hasattr(y, "logits") else y


@pytest.mark.parametrize("permanent", [True, False], ids=["removed", "masked"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_save_load_round_trip_keeps_outputs(kind, permanent, tmp_path):
    """pof.save -> pof.load (registry models rebuilt from the file; any other model into a
    fresh instance) after a mean-recovered prune: outputs equal to 1e-6."""
    model, x = KINDS[kind]()
    with torch.no_grad():  # give biases and folded means something to carry
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pof.prune(model, 0.5, recover="mean")
    if permanent:
        pof.remove(model)
    want = _logits(model, x)
    path = pof.save(model, tmp_path / "m.safetensors")
    fresh = None if kind in ("small_cnn", "resnet20", "mobilenet_v2_cifar", "vit_tiny") else (
        KINDS[kind]()[0])
    loaded, meta = pof.load(path, model=fresh)
    assert isinstance(meta, dict)
    assert torch.allclose(_logits(loaded, x), want, atol=1e-6, rtol=0)
    assert pof.sparsity_report(loaded).sparsity == pytest.approx(
        pof.sparsity_report(model).sparsity)


def test_save_pretrained_of_folded_means_refuses_in_one_line(tmp_path):
    model, _ = _bert()
    pof.prune(model, 0.5, recover="mean")
    pof.remove(model)
    with pytest.raises(pof.PofError, match="pof.save") as e:
        model.save_pretrained(tmp_path / "hf")
    assert "\n" not in str(e.value) and not (tmp_path / "hf").exists()
    plain, _ = _bert()  # zero fill has nothing to lose: save_pretrained is left alone
    pof.prune(plain, 0.5, recover="zero")
    pof.remove(plain)
    plain.save_pretrained(tmp_path / "hf0")
    assert (tmp_path / "hf0" / "config.json").is_file()


def test_load_of_a_cli_checkpoint_is_the_model_pof_eval_sees(tmp_path):
    ckpt = _saved_sparse(tmp_path / "gmp.safetensors")
    model, meta = pof.load(ckpt)
    assert meta["arch"]["name"] == "small_cnn"
    assert pof.sparsity_report(model).sparsity == pytest.approx(0.6, abs=0.01)
    with pytest.raises(pof.PofError, match="checkpoint not found"):
        pof.load(tmp_path / "nope.safetensors")
