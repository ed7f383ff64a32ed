"""Channel (structured) pof: grouping, masks, physical removal, penalties, errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pof
from pof.core.channel_masks import is_channel_pruned
from pof.core.parametrizations import PruneMask
from pof.errors import CheckpointError, PofError
from pof.models import create_model
from pof.training.checkpoint import model_from_checkpoint, save_checkpoint

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


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2_cifar"])
def test_channel_prune_removes_channels_exactly(name):
    model = _trained_like(name)
    before = {n: (m.weight.shape[0], m.weight.shape[1] * getattr(m, "groups", 1))
              for n, m in _layers(model).items()}
    x = torch.randn(3, 3, 32, 32)
    batches = [torch.randn(8, 3, 32, 32) for _ in range(2)]
    pof.prune_channels(model, 0.5, recover="mean", batches=batches)
    masked = model(x)
    pof.remove_channels(model)
    assert not any(isinstance(p, PruneMask) for p in model.modules())
    out = model(x)
    assert out.shape == (3, 10)
    torch.testing.assert_close(out, masked, atol=1e-5, rtol=1e-5)
    # every channel count is half of the original, within one channel per group
    first, last = next(iter(before)), list(before)[-1]
    for n, m in _layers(model).items():
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
    pen = pof.PrunePenalty(model, 0.5, channels=pof.channel_groups(model))
    pen.refresh()
    pof.prune_channels(model, 0.5)
    mods = dict(model.named_modules())
    for name, keep in zip(pen.channels.consumers, pen.masks, strict=True):
        mask = next(p for p in mods[name].parametrizations.weight if isinstance(p, PruneMask))
        assert torch.equal(mask.mask, keep), name  # the penalty pushes what prune removes
    assert (model(x) - ref).abs().max() > 1e-3
    with pytest.raises(PofError, match="remove_channels"):
        pof.remove(model)  # unstructured removal would keep the channels
    pof.unprune(model)
    torch.testing.assert_close(model(x), ref)
    assert not is_channel_pruned(model)


def test_channel_pruned_checkpoint_roundtrip(tmp_path):
    model = _trained_like("mobilenet_v2_cifar")
    pof.prune_channels(model, 0.5)
    with pytest.raises(CheckpointError, match="remove_channels"):
        save_checkpoint(tmp_path / "masked.safetensors", model, {})
    pof.remove_channels(model)
    path = save_checkpoint(tmp_path / "c.safetensors", model,
                           {"arch": {"name": "mobilenet_v2_cifar", "num_classes": 10}})
    loaded, meta = model_from_checkpoint(path)
    assert meta["widths"]["features.1.conv.0.0"]["groups"] == 16  # depthwise, half
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), model(x))
    assert sum(p.numel() for p in loaded.parameters()) == sum(
        p.numel() for p in model.parameters())


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
    with pytest.raises(PofError, match="layer 'fc' is not called as a module"):
        pof.prune_channels(_Functional(), 0.5)


def test_wrong_example_input_is_one_line():
    model = create_model("small_cnn")  # 1 input channel; the default guess is 1x32x32
    with pytest.raises(PofError, match="cannot trace") as e:
        pof.prune_channels(model, 0.5, example_inputs=torch.zeros(1, 3, 8, 8))
    assert "\n" not in str(e.value)


def test_ratio_removing_whole_group_names_layer():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Conv2d(2, 4, 3), nn.Flatten(),
                          nn.LazyLinear(3))
    model(torch.zeros(1, 3, 8, 8))
    with pytest.raises(PofError, match="all 2 channels of layer '0'"):
        pof.prune_channels(model, 0.8, example_inputs=torch.zeros(1, 3, 8, 8))


def test_magnitude_importance_and_bad_arguments():
    model = create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    pof.prune_channels(model, 0.25, importance="magnitude")
    pof.remove_channels(model)
    assert model(x).shape == (2, 10)
    assert model.layer1[0].conv1.out_channels == 12
    with pytest.raises(PofError, match="needs batches"):
        pof.prune_channels(create_model("resnet20"), 0.5, recover="mean")
    with pytest.raises(PofError, match="importance"):
        pof.prune_channels(create_model("resnet20"), 0.5, importance="taylor")
    with pytest.raises(PofError, match="exclude pattern 'nope'"):
        pof.prune_channels(create_model("resnet20"), 0.5, exclude="nope")
    with pytest.raises(PofError, match="no channel masks"):
        pof.remove_channels(create_model("resnet20"))


def test_missing_torch_pruning_is_one_line(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch_pruning", None)
    with pytest.raises(PofError, match=r"pip install 'pof\[speed\]'") as e:
        pof.channel_groups(create_model("resnet20"))
    assert "\n" not in str(e.value)


def test_train_config_and_loop_with_channel_penalty(tmp_path):
    from pof.errors import ConfigError
    from pof.training.checkpoint import load_checkpoint, split
    from pof.training.config import TrainConfig
    from pof.training.loop import train

    with pytest.raises(ConfigError, match="penalty pof"):
        TrainConfig(penalty="l1", structure="channel")
    with pytest.raises(ConfigError, match="not a range"):
        TrainConfig(penalty="pof", pattern="2:4", sparsity="0.3:0.7")
    with pytest.raises(ConfigError, match="exclude each other"):
        TrainConfig(penalty="pof", structure="channel", pattern="2:4")
    with pytest.raises(ConfigError, match="N:M"):
        TrainConfig(penalty="pof", pattern="4:2")
    assert TrainConfig(penalty="pof", pattern=" 1:4").sparsity == 0.75
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
