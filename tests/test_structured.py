"""Channel (structured) pof: grouping, masks, physical removal, penalties, errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pof
from pof.checkpoint import model_from_checkpoint, save_checkpoint
from pof.models import create_model
from pof.prune import PruneMask

pytest.importorskip("torch_pruning")


def _trained_like(name: str, seed: int = 0) -> nn.Module:
    """A registry model in eval mode with non-trivial BatchNorm statistics, on the sphere."""
    torch.manual_seed(seed)
    m = create_model(name).eval()
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.normal_(0, 0.1)
    return pof.to_sphere(m)


def _convs(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2_cifar"])
def test_channel_prune_removes_channels_exactly(name):
    model = _trained_like(name)
    before = {n: (m.weight.shape[0], m.weight.shape[1] * getattr(m, "groups", 1))
              for n, m in _convs(model).items()}
    x = torch.randn(3, 3, 32, 32)
    batches = [torch.randn(8, 3, 32, 32) for _ in range(2)]
    pof.prune(model, 0.5, structure="channel", recover="mean", batches=batches)
    masked = model(x)
    pof.remove(model)
    assert not any(isinstance(p, PruneMask) for p in model.modules())
    out = model(x)
    assert out.shape == (3, 10)
    torch.testing.assert_close(out, masked, atol=1e-5, rtol=1e-5)
    # every channel count is half of the original, within one channel per group
    first, last = next(iter(before)), list(before)[-1]
    for n, m in _convs(model).items():
        o, i = m.weight.shape[0], m.weight.shape[1] * getattr(m, "groups", 1)
        o0, i0 = before[n]
        if n != last:
            assert abs(o - o0 / 2) <= 1, (n, o, o0)
        if n != first:
            assert abs(i - i0 / 2) <= 1, (n, i, i0)
    n1 = sum(p.numel() for p in model.parameters())
    n0 = sum(p.numel() for p in create_model(name).parameters())
    assert 0.24 < n1 / n0 < 0.28  # ~(1/2)^2: both sides of most weights lose half


def test_channel_masks_are_reversible_and_match_penalty():
    model = _trained_like("resnet20")
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    pen = pof.PrunePenalty(model, 0.5, structure="channel")
    pen.refresh()
    pof.prune(model, 0.5, structure="channel")
    mods = dict(model.named_modules())
    for name, keep in zip(pen.names, pen._masks, strict=True):
        mask = next(p for p in mods[name].parametrizations.weight if isinstance(p, PruneMask))
        assert torch.equal(mask.mask, keep), name  # the penalty pushes what prune removes
    assert (model(x) - ref).abs().max() > 1e-3
    pof.unprune(model)
    torch.testing.assert_close(model(x), ref)
    assert not pof.structured.is_channel_pruned(model)


def test_channel_pruned_checkpoint_roundtrip(tmp_path):
    model = _trained_like("mobilenet_v2_cifar")
    pof.prune(model, 0.5, structure="channel")
    with pytest.raises(ValueError, match="remove"):
        save_checkpoint(tmp_path / "masked.safetensors", model, {})
    pof.remove(model)
    path = save_checkpoint(tmp_path / "c.safetensors", model,
                           {"arch": {"name": "mobilenet_v2_cifar", "num_classes": 10}})
    loaded, _ = model_from_checkpoint(path)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), model(x))
    assert sum(p.numel() for p in loaded.parameters()) == sum(
        p.numel() for p in model.parameters())


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
    model = pof.to_sphere(create_model("small_cnn", width=8))
    pen = pof.PrunePenalty(model, None, pattern="2:4", refresh_every=5)
    e0, e1 = _energy_after(pen, model, 60)
    assert e1 < 0.5 * e0, (e0, e1)
    with pytest.raises(ValueError, match="disagrees"):
        pof.PrunePenalty(model, 0.7, pattern="2:4")


def test_channel_penalty_lowers_channel_energy():
    torch.manual_seed(0)
    model = pof.to_sphere(create_model("small_cnn", width=8), exclude="fc")
    pen = pof.PrunePenalty(model, 0.5, structure="channel", example_inputs=torch.zeros(1, 1, 8, 8),
                           refresh_every=5)
    e0, e1 = _energy_after(pen, model, 60)
    assert e1 < 0.5 * e0, (e0, e1)


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.head = nn.Linear(8, 4)
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        h = self.conv(x).mean((2, 3))
        return self.head(F.linear(h, self.fc.weight))  # fc never called as a module


def test_untraceable_layer_is_named():
    with pytest.raises(ValueError, match="layer 'fc' is not called as a module"):
        pof.prune(_Functional(), 0.5, structure="channel")


def test_wrong_example_input_is_one_line():
    model = create_model("small_cnn")  # 1 input channel; the default guess is 1x32x32
    with pytest.raises(ValueError, match="cannot trace") as e:
        pof.prune(model, 0.5, structure="channel", example_inputs=torch.zeros(1, 3, 8, 8))
    assert "\n" not in str(e.value)


def test_ratio_removing_whole_group_names_layer():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Conv2d(2, 4, 3), nn.Flatten(),
                          nn.LazyLinear(3))
    model(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="all 2 channels of layer '0'"):
        pof.prune(model, 0.8, structure="channel", example_inputs=torch.zeros(1, 3, 8, 8))


def test_magnitude_importance_and_bad_arguments():
    model = create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    pof.prune(model, 0.25, structure="channel", importance="magnitude")
    pof.remove(model)
    assert model(x).shape == (2, 10)
    assert model.layer1[0].conv1.out_channels == 12
    with pytest.raises(ValueError, match="needs batches"):
        pof.prune(create_model("resnet20"), 0.5, structure="channel", recover="mean")
    with pytest.raises(ValueError, match="importance"):
        pof.prune(create_model("resnet20"), 0.5, structure="channel", importance="taylor")
    with pytest.raises(ValueError, match="structure"):
        pof.prune(create_model("resnet20"), 0.5, structure="filter")


def test_semi_structured_checks_pattern_and_device():
    from pof.semi_structured import check_two_four, to_semi_structured

    lin = nn.Linear(8, 4)
    with pytest.raises(ValueError, match="layer 'fc' is not 2:4 sparse"):
        check_two_four(lin.weight, "fc")
    pof.prune(nn.Sequential(lin), None, pattern="2:4", keep_first_conv=False)
    check_two_four(lin.weight, "fc")  # exactly 2 of every 4 kept
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            to_semi_structured(nn.Sequential(lin))


def test_train_config_and_loop_with_channel_penalty(tmp_path):
    from pof.checkpoint import load_checkpoint, split
    from pof.train import TrainConfig, train

    with pytest.raises(ValueError, match="penalty pof"):
        TrainConfig(penalty="l1", structure="channel").check()
    with pytest.raises(ValueError, match="not a range"):
        TrainConfig(penalty="pof", structure="channel", sparsity="0.3:0.7").check()
    cfg = TrainConfig(model="small_cnn", data="digits", penalty="pof", structure="channel",
                      epochs=1, max_steps=2, out=str(tmp_path / "run"), progress=False,
                      workers=0, batch_size=32)
    train(cfg)
    tensors, _ = load_checkpoint(tmp_path / "run" / "last.safetensors")
    masks = [v for k, v in split(tensors, "extra").items() if k.startswith("penalty.")]
    assert sorted(tuple(k.shape) for k in masks) == [
        (10, 128), (64, 32, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3)]
    for keep in masks:  # half of every consumer's input columns are in the pruned set
        cols = (~keep).transpose(0, 1).flatten(1).all(1)
        assert int(cols.sum()) == keep.shape[1] // 2
        assert int((~keep).sum()) == int(cols.sum()) * keep[:, 0].numel()
