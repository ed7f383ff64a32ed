"""Core library: sphere, penalty, prune, recovery, report — on models pof has never seen."""

from __future__ import annotations

from importlib.util import find_spec

import pytest
import torch
from torch import nn

import pof
from pof.core.fold import as_dense
from pof.core.sphere import row_norms


class SmallVGG(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.features(x))


class GroupedNet(nn.Module):
    """Grouped and depthwise convs, a conv without a following norm, a strided conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.dw = nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32)
        self.pw = nn.Conv2d(32, 24, 1)  # no norm after it: keeps a per-unit scale
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(self.bn1(self.grouped(x)))
        x = torch.relu(self.pw(torch.relu(self.dw(x))))
        return self.fc(x.mean((2, 3)))


def _randomise_norms(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
        if isinstance(m, nn.Conv2d | nn.Linear):  # weights far from unit norm
            m.weight.data.mul_(3.0)
    return model.eval()


MODELS = [SmallVGG, GroupedNet]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _x(model):
    return torch.randn(4, 3, 16, 16)


def _prunable(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


@pytest.mark.parametrize("cls", MODELS)
def test_sphere_roundtrip_preserves_outputs(cls):
    model = _randomise_norms(cls())
    x = _x(model)
    ref = model(x)
    pof.to_sphere(model)
    layers = [n for n, m in model.named_modules() if pof.is_sphere(m)]
    first = _prunable(model)[0][0]
    assert first not in layers and len(layers) == len(_prunable(model)) - 1
    for m in model.modules():
        if pof.is_sphere(m):
            w = m.parametrizations.weight.original
            unit = w / row_norms(w).view(-1, *[1] * (w.dim() - 1))
            assert torch.allclose(row_norms(unit), torch.ones(w.shape[0]), atol=1e-5)
    torch.testing.assert_close(model(x), ref, atol=1e-4, rtol=1e-4)
    pof.from_sphere(model)
    assert not any(pof.is_sphere(m) for m in model.modules())
    torch.testing.assert_close(model(x), ref, atol=1e-4, rtol=1e-4)


def test_sphere_layers_without_norm_keep_a_scale():
    model = pof.to_sphere(_randomise_norms(GroupedNet()))
    assert model.pw.parametrizations.weight[0].scale is not None
    assert model.fc.parametrizations.weight[0].scale is not None
    assert model.grouped.parametrizations.weight[0].scale is None  # BN absorbs the norm


def test_sphere_include_exclude_and_errors():
    model = pof.to_sphere(SmallVGG(), exclude="head")
    assert not pof.is_sphere(model.head) and pof.is_sphere(model.features[3])
    model = pof.to_sphere(SmallVGG(), include=["head"])
    assert [n for n, m in model.named_modules() if pof.is_sphere(m)] == ["head"]
    with pytest.raises(ValueError, match="matches no"):
        pof.to_sphere(SmallVGG(), exclude="nonexistent*")
    with pytest.raises(ValueError, match="no prunable layer"):
        pof.to_sphere(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))
    with pytest.raises(ValueError, match="already parametrized"):
        pof.to_sphere(pof.to_sphere(SmallVGG()))


def test_cosine_mode_normalises_inputs():
    lin = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 3, bias=False))
    pof.to_sphere(lin, include="1", cosine=True)
    x = torch.randn(5, 4)
    out = lin[1](x)  # |cos| <= 1 for a unit weight and a normalised input
    assert out.abs().max() <= 1 + 1e-5
    torch.testing.assert_close(lin[1](3.0 * x), out, atol=1e-5, rtol=1e-5)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 8, 3, groups=2, bias=False))
    pof.to_sphere(conv, cosine=True)
    y = torch.randn(2, 4, 7, 7)
    assert conv[1](y).abs().max() <= 1 + 1e-5
    with pytest.raises(ValueError, match="cosine"):
        pof.from_sphere(conv)


def _zeros(m):
    return int((m.weight == 0).sum())


@pytest.mark.parametrize("sphere", [False, True])
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
@pytest.mark.parametrize("cls", MODELS)
def test_layer_prune_hits_target_exactly(cls, sparsity, sphere):
    model = cls()
    if sphere:
        pof.to_sphere(model)
    pof.prune(model, sparsity)
    first = _prunable(model)[0]
    assert _zeros(first[1]) == 0
    for _, m in _prunable(model)[1:]:
        assert abs(_zeros(m) - sparsity * m.weight.numel()) <= 1
    report = pof.sparsity_report(model)
    assert [r.name for r in report.layers] == [n for n, _ in _prunable(model)]
    assert abs(report.layers[1].sparsity - sparsity) <= 1 / report.layers[1].numel


def test_global_prune_hits_global_target_with_uneven_layers():
    model = SmallVGG()
    model.head.weight.data.mul_(100)  # big weights: the head should keep more
    pof.prune(model, 0.6, scope="global")
    layers = _prunable(model)[1:]
    zeros = sum(_zeros(m) for _, m in layers)
    total = sum(m.weight.numel() for _, m in layers)
    assert abs(zeros - 0.6 * total) <= 1
    assert _zeros(model.head) / model.head.weight.numel() < 0.1


def test_nm_pattern_holds_in_every_group():
    model = SmallVGG()
    pof.prune(model, None, pattern="2:4")
    for _, m in _prunable(model)[1:]:
        w = m.weight.detach()
        groups = (w.movedim(1, -1) if w.dim() == 4 else w).reshape(-1, 4)
        assert ((groups != 0).sum(1) == 2).all()
    assert _zeros(model.features[0]) == 0


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        pof.prune(SmallVGG(), 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        pof.prune(SmallVGG(), -0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        pof.PrunePenalty(SmallVGG(), 1.5)
    with pytest.raises(ValueError, match="N < M"):
        pof.prune(SmallVGG(), None, pattern="4:4")
    with pytest.raises(ValueError, match="not divisible"):
        pof.prune(GroupedNet(), None, pattern="2:3")  # depthwise: 1 input channel per group
    with pytest.raises(ValueError, match="matches no"):
        pof.prune(SmallVGG(), 0.5, exclude="classifier")
    with pytest.raises(ValueError, match="no prunable layer"):
        pof.prune(nn.Sequential(nn.ReLU()), 0.5)
    with pytest.raises(ValueError, match="scope"):
        pof.prune(SmallVGG(), 0.5, scope="row")
    model = pof.prune(SmallVGG(), 0.5)
    with pytest.raises(ValueError, match=r"pof.remove\(model\)"):
        pof.prune(model, 0.7)


@pytest.mark.parametrize("sphere", [False, True])
def test_unprune_restores_and_remove_is_permanent(sphere):
    model = _randomise_norms(SmallVGG())
    if sphere:
        pof.to_sphere(model)
    x = torch.randn(3, 3, 16, 16)
    ref = model(x)
    pof.prune(model, 0.7)
    pruned = model(x)
    assert not torch.allclose(pruned, ref)
    pof.unprune(model)
    torch.testing.assert_close(model(x), ref)
    assert sphere == pof.is_sphere(model.head)
    pof.prune(model, 0.7)
    pof.remove(model)
    assert not any(pof.is_pruned(m) for m in model.modules())
    assert type(model.head) is nn.Linear  # zero recovery: a plain layer
    torch.testing.assert_close(model(x), pruned)
    assert abs(_zeros(model.features[3]) - 0.7 * model.features[3].weight.numel()) <= 1


@pytest.mark.parametrize("mean_scope", ["unit", "layer"])
@pytest.mark.parametrize("cls", MODELS)
def test_mean_recovery_folds_exactly_and_stays_sparse(cls, mean_scope):
    model = _randomise_norms(cls())
    pof.to_sphere(model)
    x = torch.randn(3, 3, 16, 16)
    pof.prune(model, 0.6, recover="mean", mean_scope=mean_scope)
    for _, m in _prunable(model)[1:]:
        p = next(p for p in m.parametrizations.weight if isinstance(p, pof.PruneMask))
        w = m.weight.detach()
        pruned_vals = m.parametrizations.weight.original.detach()
        for q in m.parametrizations.weight:
            if q is p:
                break
            pruned_vals = q(pruned_vals)
        pruned_vals = pruned_vals[~p.mask].view(-1) if mean_scope == "layer" else None
        if pruned_vals is not None:  # every pruned entry equals the layer's pruned mean
            torch.testing.assert_close(w[~p.mask], pruned_vals.mean().expand(len(pruned_vals)))
    unfolded = model(x)
    pof.remove(model)
    folded_types = {type(m) for m in model.modules()}
    assert pof.FoldedConv2d in folded_types and pof.FoldedLinear in folded_types
    torch.testing.assert_close(model(x), unfolded, atol=1e-5, rtol=1e-5)
    for _, m in _prunable(model)[1:]:
        assert abs(_zeros(m) - 0.6 * m.weight.numel()) <= 1


def test_folded_grouped_conv_equals_masked_and_as_dense():
    """The mean folded into the kernel at run time, and written out dense for export."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 3, padding=1, groups=2)
    pof.prune(nn.Sequential(nn.Identity(), conv), 0.6, recover="mean",
              keep_first_conv=False)
    x = torch.randn(2, 8, 9, 9)
    folded = pof.fold(conv)
    assert (folded.weight == 0).float().mean() >= 0.6 - 1e-6  # stored sparse
    torch.testing.assert_close(folded(x), conv(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(as_dense(folded)(x), conv(x), atol=1e-5, rtol=1e-5)
    assert type(as_dense(folded)) is nn.Conv2d  # what exporters see: a plain layer


def test_folded_kernel_is_cached_for_inference_and_follows_changes():
    """Without autograd the folded kernel is computed once; a weight or mean change, or a
    dtype change, recomputes it; with autograd the gradient reaches the stored weight."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    pof.prune(nn.Sequential(nn.Identity(), conv), 0.5, recover="mean", keep_first_conv=False)
    folded = pof.fold(conv)
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        first = folded(x)
        kernel = folded._folded_kernel[1]
        torch.testing.assert_close(folded(x), first)
        assert folded._folded_kernel[1] is kernel  # reused, not recomputed
        folded.weight.mul_(2)
        folded.recovery_mean.mul_(2)
        torch.testing.assert_close(folded(x) - folded.bias.view(1, -1, 1, 1),
                                   2 * (first - folded.bias.view(1, -1, 1, 1)))
        assert folded._folded_kernel[1] is not kernel
        torch.testing.assert_close(folded.double()(x.double()).float(),
                                   folded.float()(x), atol=1e-5, rtol=1e-5)
        ref = folded(x)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), ref)
    folded(x).sum().backward()
    assert folded.weight.grad is not None and folded.weight.grad.abs().sum() > 0


def test_mean_recovery_beats_zero_fill_on_biased_weights():
    torch.manual_seed(0)
    lin = nn.Linear(64, 8)
    lin.weight.data = torch.randn(8, 64) * 0.05 + 0.02  # small weights with a common offset
    x = torch.rand(256, 64)
    ref = lin(x)
    errs = {}
    for recover in ("zero", "mean"):
        pof.prune(lin, 0.5, recover=recover, keep_first_conv=False)
        errs[recover] = (lin(x) - ref).pow(2).mean().item()
        pof.unprune(lin)
    assert errs["mean"] < 0.5 * errs["zero"]


def test_penalty_steps_reduce_pruned_energy():
    model = pof.to_sphere(SmallVGG())
    penalty = pof.PrunePenalty(model, sparsity=0.7, refresh_every=5, weight=1.0, form="energy")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    start = penalty.pruned_energy().item()
    for _ in range(30):
        opt.zero_grad()
        penalty().backward()
        opt.step()
    end = penalty.pruned_energy().item()
    assert end < 0.5 * start, (start, end)
    # what prune then removes is only that little energy: the filters barely tilt
    before = {n: m.weight.detach().clone() for n, m in _prunable(model)[1:]}
    pof.prune(model, 0.7)
    for n, m in _prunable(model)[1:]:
        cos = nn.functional.cosine_similarity(before[n].flatten(1), m.weight.detach().flatten(1))
        assert cos.min() > 0.8


def test_penalty_is_deterministic_differentiable_and_global():
    model = pof.to_sphere(GroupedNet())
    a = pof.PrunePenalty(model, 0.5)()
    b = pof.PrunePenalty(model, 0.5)()
    assert a.item() == b.item() and a.requires_grad
    a.backward()
    assert model.pw.parametrizations.weight.original.grad.abs().sum() > 0
    g = pof.PrunePenalty(model, 0.5, scope="global")
    e = g.pruned_energy()
    ws = g.weights()
    masks = pof.compute_masks([w.detach() for w in ws], 0.5, "global")
    pruned = sum((w[~k] ** 2).sum() for w, k in zip(ws, masks, strict=True))
    expect = pruned / sum((w**2).sum() for w in ws)
    torch.testing.assert_close(e, expect)
    with pytest.raises(ValueError, match="scope"):
        pof.PrunePenalty(model, 0.5, scope="unit")


def test_sine_form_is_root_energy_and_reaches_lower_energy():
    model = pof.to_sphere(SmallVGG())
    sine = pof.PrunePenalty(model, 0.9, form="sine", beta=0, weight=1.0)
    ws = sine.weights()
    masks = pof.compute_masks([w.detach() for w in ws], 0.9, "layer")
    expect = torch.stack([((w[~k] ** 2).sum() / (w**2).sum()).sqrt()
                          for w, k in zip(ws, masks, strict=True)]).mean()
    torch.testing.assert_close(sine(), expect)
    ends = {}
    for form in ("energy", "sine"):
        torch.manual_seed(0)
        model = pof.to_sphere(SmallVGG())
        pen = pof.PrunePenalty(model, 0.9, form=form, refresh_every=5, weight=1.0)
        opt = torch.optim.SGD(model.parameters(), lr=0.2)
        for _ in range(200):  # the quadratic form slows down as the energy shrinks
            opt.zero_grad()
            pen().backward()
            opt.step()
        ends[form] = pen.pruned_energy().item()
    assert ends["sine"] < 0.5 * ends["energy"], ends
    with pytest.raises(ValueError, match="form"):
        pof.PrunePenalty(model, 0.5, form="cube")


def test_l1_penalty_matches_definition():
    model = SmallVGG()
    l1 = pof.L1Penalty(model, weight=0.5)()
    expect = 0.5 * sum(m.weight.abs().sum() for _, m in _prunable(model)[1:])
    torch.testing.assert_close(l1, expect)


def test_sparsity_report_table_and_dict():
    model = pof.prune(SmallVGG(), 0.5)
    report = pof.sparsity_report(model)
    text = str(report)
    assert "features.3.weight:  50.00% of" in text and text.splitlines()[-1].startswith("global:")
    d = report.to_dict()
    assert d["zeros"] == report.zeros and len(d["layers"]) == 4


def test_resnet20_from_registry_end_to_end():
    model = pof.create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    pof.to_sphere(model)
    torch.testing.assert_close(model(x), ref, atol=1e-4, rtol=1e-4)
    pof.prune(model, 0.5, recover="mean")
    y = model(x)
    pof.remove(model)
    torch.testing.assert_close(model(x), y, atol=1e-5, rtol=1e-5)
    assert abs(pof.sparsity_report(model).layers[1].sparsity - 0.5) < 1e-3


def test_ties_still_give_exact_counts():
    lin = nn.Linear(10, 10)
    lin.weight.data.fill_(0.5)  # every magnitude ties
    pof.prune(lin, 0.35, keep_first_conv=False)
    assert _zeros(lin) == 35
    pof.unprune(lin)
    pof.prune(lin, 0.35, scope="global", keep_first_conv=False)
    assert _zeros(lin) == 35


def test_kth_smallest_is_exact_on_large_tensors():
    from pof.core.masks import _kth_smallest

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1 << 21, generator=g).abs()
    x[:1000] = 0.5  # a block of ties
    for k in (1, 1000, 777_777, (1 << 21) - 5):
        assert _kth_smallest(x, k) == x.kthvalue(k).values


def test_scaled_unit_sphere_equals_torch_weight_norm():
    lin = nn.Linear(6, 4)
    ref = torch.nn.utils.parametrizations.weight_norm(nn.Linear(6, 4), dim=0)
    with torch.no_grad():
        ref.parametrizations.weight.original1.copy_(lin.weight)
        ref.parametrizations.weight.original0.copy_(torch.rand(4, 1) + 0.5)
    scale = ref.parametrizations.weight.original0.detach().flatten()
    torch.testing.assert_close(pof.UnitSphere(scale)(lin.weight), ref.weight)


def _energy_after(pen: pof.PrunePenalty, model: nn.Module, steps: int) -> tuple[float, float]:
    e0 = pen.pruned_energy().item()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        pen().backward()
        opt.step()
    return e0, pen.pruned_energy().item()


def test_two_four_penalty_lowers_pruned_energy():
    torch.manual_seed(0)
    model = pof.to_sphere(pof.create_model("small_cnn", width=8))
    pen = pof.PrunePenalty(model, None, pattern="2:4", refresh_every=5)
    e0, e1 = _energy_after(pen, model, 60)
    assert e1 < 0.5 * e0, (e0, e1)
    with pytest.raises(ValueError, match="disagrees"):
        pof.PrunePenalty(model, 0.7, pattern="2:4")


@pytest.mark.skipif(find_spec("torch_pruning") is None, reason="needs torch-pruning")
def test_channel_penalty_lowers_channel_energy():
    torch.manual_seed(0)
    model = pof.to_sphere(pof.create_model("small_cnn", width=8), exclude="fc")
    plan = pof.channel_groups(model, torch.zeros(1, 1, 8, 8))
    pen = pof.PrunePenalty(model, 0.5, channels=plan, refresh_every=5)
    e0, e1 = _energy_after(pen, model, 60)
    assert e1 < 0.5 * e0, (e0, e1)
    with pytest.raises(ValueError, match="per channel group"):
        pof.PrunePenalty(model, 0.5, channels=plan, scope="global")
