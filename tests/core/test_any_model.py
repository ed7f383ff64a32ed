"""Transformers, HF-style and audio/decoder nets: sphere, prune, fold, penalty, report."""

from __future__ import annotations

import re

import pytest
import torch
import transformers as tr
from torch import nn

import pof
from pof.core.structure import apply_structure
from pof.core.subnet import SubnetSampler
from pof.core.targets import raw_param
from pof.training.checkpoint import load_checkpoint, save_checkpoint, split

select_weights = pof.select_weights


class Conv1dNet(nn.Module):
    """Audio-style: Conv1d + BatchNorm1d, a grouped Conv1d, a Conv1d without a norm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(4, 16, 5, padding=2)
        self.bn0 = nn.BatchNorm1d(16)
        self.conv = nn.Conv1d(16, 32, 3, padding=1, groups=2, bias=False)
        self.bn1 = nn.BatchNorm1d(32)
        self.plain = nn.Conv1d(32, 24, 3, stride=2, padding=1, padding_mode="reflect")
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(self.bn1(self.conv(x)))
        return self.fc(torch.relu(self.plain(x)).mean(-1))

    @staticmethod
    def example():
        return torch.randn(3, 4, 40)


class Decoder(nn.Module):
    """Image decoder: Linear, ConvTranspose2d + BatchNorm2d, ConvTranspose2d with output_padding."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 32 * 4 * 4)
        self.up1 = nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.up2 = nn.ConvTranspose2d(16, 3, 3, stride=2, padding=1, output_padding=1)

    def forward(self, z):
        x = self.fc(z).view(-1, 32, 4, 4)
        return self.up2(torch.relu(self.bn1(self.up1(x))))

    @staticmethod
    def example():
        return torch.randn(3, 8)


class EncoderNet(nn.Module):
    """A plain nn.TransformerEncoder classifier (post-norm, batch second)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(12, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(0))

    @staticmethod
    def example():
        return torch.randn(7, 3, 12)  # (seq, batch, features)


def vit():
    return pof.create_model("vit_tiny", dim=32, depth=2, heads=2, image_size=16)


def bert():
    cfg = tr.BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128,
                        max_position_embeddings=32, num_labels=3)
    return tr.BertForSequenceClassification(cfg)


def gpt2():
    cfg = tr.GPT2Config(vocab_size=500, n_embd=64, n_layer=2, n_head=4, n_positions=32,
                         bos_token_id=0, eos_token_id=0)
    return tr.GPT2LMHeadModel(cfg)


def _tokens():
    return torch.randint(0, 500, (3, 12), generator=torch.Generator().manual_seed(0))


def _run(model, x):
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


KINDS = {
    "transformer_encoder": (EncoderNet, EncoderNet.example),
    "vit_tiny": (vit, lambda: torch.randn(2, 3, 16, 16)),
    "bert": (bert, _tokens),
    "gpt2": (gpt2, _tokens),
    "conv1d": (Conv1dNet, Conv1dNet.example),
    "conv_transpose": (Decoder, Decoder.example),
}


def _build(kind):
    torch.manual_seed(0)
    make, example = KINDS[kind]
    model = make()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in select_weights(model, include="*"):
            raw = t.weight
            raw.mul_(3.0)  # far from unit norm
            if t.unit_dim == 0 and raw.dim() == 2 and raw.shape[0] > 4:  # uneven rows
                raw.mul_(torch.rand(raw.shape[0], 1, generator=g) + 0.5)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval(), example()


@pytest.mark.parametrize("kind", KINDS)
def test_sphere_keeps_outputs_and_selects_by_parameter(kind):
    model, x = _build(kind)
    with torch.no_grad():
        ref = _run(model, x)
    pof.to_sphere(model)
    keys = [t.key for t in select_weights(model)]
    if kind in ("transformer_encoder", "vit_tiny"):
        assert sum(k.endswith("self_attn.in_proj_weight") for k in keys) == 2
    if kind == "gpt2":
        assert "transformer.h.0.attn.c_attn.weight" in keys and "lm_head.weight" not in keys
    for t in select_weights(model):
        assert pof.is_sphere(t.module, t.attr), t.key
    for grad in (False, True):  # no_grad takes PyTorch's fused transformer path
        with torch.set_grad_enabled(grad):
            torch.testing.assert_close(_run(model, x), ref, atol=1e-4, rtol=1e-4)
    pof.from_sphere(model)
    with torch.no_grad():
        torch.testing.assert_close(_run(model, x), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_prune_is_exact_per_weight_and_group_and_fold_matches(kind):
    model, x = _build(kind)
    pof.to_sphere(model)
    pof.prune(model, 0.7, recover="mean")
    targets = select_weights(model)
    for t in targets:
        mask = next(p for p in t.module.parametrizations[t.attr] if isinstance(p, pof.PruneMask))
        for piece in t.pieces(mask.mask):  # q, k and v each lose exactly 70%
            assert int((~piece).sum()) == round(0.7 * piece.numel()), t.key
    report = pof.sparsity_report(model)
    pruned = {r.key: r for r in report.layers if r.dense is None}
    assert set(pruned) == {t.key for t in targets}
    for r in pruned.values():
        assert abs(r.zeros - 0.7 * r.numel) <= 1.5, r.key  # rounding in each q/k/v block
    with torch.no_grad():
        unfolded = _run(model, x)
        pof.remove(model)
        assert not any(pof.is_pruned(m) for m in model.modules())
        assert any(pof.is_folded(m) for m in model.modules())
        for grad in (False, True):
            with torch.set_grad_enabled(grad):
                torch.testing.assert_close(_run(model, x), unfolded, atol=1e-5, rtol=1e-5)
    after = {r.key: r for r in pof.sparsity_report(model).layers}
    for key, r in pruned.items():  # stored zeros, mean folded out
        assert after[key].zeros == r.zeros, key


@pytest.mark.parametrize("kind", ["vit_tiny", "gpt2", "conv1d", "conv_transpose"])
def test_penalty_steps_lower_pruned_energy(kind):
    torch.manual_seed(0)
    model = pof.to_sphere(KINDS[kind][0]())
    penalty = pof.PrunePenalty(model, 0.7, form="sine", refresh_every=5)
    if kind == "vit_tiny":
        assert sum(n.endswith("in_proj_weight[q]") for n in penalty.names) == 2
    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    start = penalty.pruned_energy().item()
    for _ in range(15):
        opt.zero_grad()
        penalty().backward()
        opt.step()
    assert penalty.pruned_energy().item() < 0.7 * start


def test_report_lists_dense_weights_with_reasons():
    model, _ = _build("gpt2")
    pof.prune(model, 0.5)
    dense = {r.key: r.dense for r in pof.sparsity_report(model).layers if r.dense}
    assert dense["transformer.wte.weight"].startswith("embedding")
    assert dense["transformer.wpe.weight"].startswith("embedding")
    assert dense["lm_head.weight"] == "tied to transformer.wte.weight (shared parameter)"
    model, _ = _build("vit_tiny")
    pof.prune(model, 0.5, exclude="head")
    report = pof.sparsity_report(model, exclude="head")
    dense = {r.key: r.dense for r in report.layers if r.dense}
    assert dense == {"cls_token": "not a layer weight (ViT.cls_token)",
                     "pos_embed": "not a layer weight (ViT.pos_embed)",
                     "patch_embed.weight": "first conv kept dense",
                     "head.weight": "excluded by pattern"}
    assert "(dense: first conv kept dense)" in str(report)
    assert report.numel == sum(p.numel() for p in model.parameters() if p.dim() >= 2)


def test_embeddings_and_unsupported_layers():
    model, x = _build("bert")
    pof.prune(model, 0.6, include=["bert.embeddings.word_embeddings", "bert.encoder.*"],
              recover="mean")
    report = {r.key: r for r in pof.sparsity_report(model).layers}
    assert abs(report["bert.embeddings.word_embeddings.weight"].sparsity - 0.6) < 1e-3
    with torch.no_grad():
        ref = _run(model, x)
        pof.remove(model)
        assert isinstance(model.bert.embeddings.word_embeddings, pof.FoldedEmbedding)
        torch.testing.assert_close(_run(model, x), ref, atol=1e-5, rtol=1e-5)
    odd = nn.Sequential(nn.Linear(4, 8), nn.LSTM(8, 8), nn.ConvTranspose2d(4, 4, 3, groups=2))
    dense = {r.key: r.dense for r in pof.sparsity_report(odd).layers if r.dense}
    assert dense["1.weight_ih_l0"] == "not a layer weight (LSTM.weight_ih_l0)"
    assert dense["2.weight"].startswith("unsupported: grouped ConvTranspose")
    mha = nn.MultiheadAttention(8, 2, kdim=4, vdim=4)
    dense = {r.key: r.dense for r in pof.sparsity_report(mha).layers if r.dense}
    assert set(dense) == {"q_proj_weight", "k_proj_weight", "v_proj_weight"}
    with pytest.raises(ValueError, match="matches no prunable weight"):
        pof.prune(odd, 0.5, include="1")
    with pytest.raises(ValueError, match="cosine=True supports Conv2d and Linear only"):
        pof.to_sphere(Conv1dNet(), cosine=True)


def test_nm_pattern_on_conv1d_and_attention():
    model, _ = _build("transformer_encoder")
    pof.prune(model, None, pattern="2:4")
    w = model.encoder.layers[0].self_attn.in_proj_weight.detach()
    assert ((w.reshape(-1, 4) != 0).sum(1) == 2).all()
    net, _ = _build("conv1d")
    pof.prune(net, None, pattern="2:4")
    w = net.plain.weight.detach().movedim(1, -1).reshape(-1, 4)  # input channels at each tap
    assert ((w != 0).sum(1) == 2).all()


def test_vit_checkpoint_roundtrip_sphere_pruned_and_folded(tmp_path):
    model, x = _build("vit_tiny")
    pof.to_sphere(model)
    pof.prune(model, 0.7, recover="mean")
    for stage in ("pruned", "folded"):
        if stage == "folded":
            pof.remove(model)
        with torch.no_grad():
            ref = _run(model, x)
        path = save_checkpoint(tmp_path / f"{stage}.safetensors", model, {})
        tensors, meta = load_checkpoint(path)
        fresh = vit()
        apply_structure(fresh, meta["structure"])
        fresh.load_state_dict(split(tensors, "model"))
        with torch.no_grad():
            torch.testing.assert_close(_run(fresh.eval(), x), ref, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("kind", "sphere"), [("vit_tiny", True), ("gpt2", False)])
def test_subnet_forward_equals_pruned_model_and_leaves_it_alone(kind, sphere):
    model, x = _build(kind)
    if sphere:
        pof.to_sphere(model)
    sampler = SubnetSampler(model, (0.3, 0.9), recover="mean")
    with torch.no_grad():
        dense = _run(model, x)
        sub = sampler.forward(x, 0.6)
        torch.testing.assert_close(_run(model, x), dense)  # weights back in place
        pof.prune(model, 0.6, recover="mean")
        torch.testing.assert_close(sub.logits if hasattr(sub, "logits") else sub,
                                   _run(model, x), atol=1e-5, rtol=1e-5)
    pof.unprune(model)
    out = sampler.forward(x, 0.6)
    (out.logits if hasattr(out, "logits") else out).sum().backward()
    for t in select_weights(model):  # straight through: every selected weight gets a gradient
        raw = raw_param(t.module, t.attr)
        assert raw.grad is not None and raw.grad.abs().sum() > 0, t.key


def test_fold_with_attention_in_proj_left_on_the_sphere(tmp_path):
    model, x = _build("vit_tiny")
    pof.to_sphere(model)
    pof.prune(model, 0.5, recover="mean", exclude="*.in_proj_weight")
    with torch.no_grad():
        ref = _run(model, x)
        pof.remove(model)  # out_proj folded: the attention must call it as a module
        attn = model.encoder.layers[0].self_attn
        assert isinstance(attn, pof.FoldedMultiheadAttention) and pof.is_sphere(attn)
        torch.testing.assert_close(_run(model, x), ref, atol=1e-5, rtol=1e-5)
        tensors, meta = load_checkpoint(save_checkpoint(tmp_path / "m.safetensors", model, {}))
        fresh = apply_structure(vit(), meta["structure"])
        fresh.load_state_dict(split(tensors, "model"))
        torch.testing.assert_close(_run(fresh.eval(), x), ref, atol=1e-5, rtol=1e-5)
        pof.from_sphere(model)
        assert type(attn) is pof.FoldedMultiheadAttention
        torch.testing.assert_close(_run(model, x), ref, atol=1e-5, rtol=1e-5)


def test_cli_trains_prunes_and_evaluates_vit_tiny_on_digits(tmp_path, capsys):
    from pof.cli import main
    from pof.training.checkpoint import read_meta

    out = tmp_path / "vit"
    assert main(["train", "--model", "vit_tiny", "--data", "digits", "--max-steps", "2",
                 "--penalty", "pof", "--out", str(out), "--device", "cpu",
                 "--progress", "false"]) == 0
    arch = read_meta(out / "last.safetensors")["arch"]
    assert arch["kwargs"] == {"in_channels": 1, "image_size": 8}  # taken from the data
    assert main(["prune", str(out / "last.safetensors"), "--sparsity", "0.7", "--permanent",
                 "--out", str(tmp_path / "p")]) == 0
    report = capsys.readouterr().out
    assert re.search(r"encoder\.layers\.0\.self_attn\.in_proj_weight: +70\.00% of", report)
    assert "patch_embed.weight:" in report and "(dense: first conv kept dense)" in report
    assert main(["eval", str(tmp_path / "p" / "pruned.safetensors")]) == 0
    assert re.search(r"^top1 \d+\.\d\d%", capsys.readouterr().out, re.M)


def test_gmp_prunes_every_attention_block_to_the_target():
    from pof.core.gmp import GradualPruner

    model, x = _build("vit_tiny")
    gmp = GradualPruner(model, 0.6, total_steps=4, end=0.5, every=1)
    for step in range(1, 5):
        gmp.update(step)
    assert any(t.attr == "in_proj_weight" for t in gmp.targets)
    for t in gmp.targets:
        for piece in t.pieces(t.weight.detach()):  # q, k and v each at exactly 60%
            assert int((piece == 0).sum()) == round(0.6 * piece.numel()), t.key
