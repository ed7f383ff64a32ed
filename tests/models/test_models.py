"""Tests for pof.models: shapes, torchvision key/shape compatibility, registry."""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import train_steps
from torch import nn

from pof.models import create_model, default_input_size, list_models
from pof.models.registry import register_model

IMAGENET = ["resnet18", "resnet50", "mobilenet_v2"]
CIFAR = ["resnet20", "resnet20_gn", "resnet56", "mobilenet_v2_cifar"]


@functools.cache
def _model(name: str) -> nn.Module:
    """One shared eval-mode instance per model (never mutated by the tests)."""
    torch.manual_seed(0)
    return create_model(name).eval()


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _bn(prefix: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (f"{prefix}.weight", (c,)),
        (f"{prefix}.bias", (c,)),
        (f"{prefix}.running_mean", (c,)),
        (f"{prefix}.running_var", (c,)),
        (f"{prefix}.num_batches_tracked", ()),
    ]


# Hand-derived from torchvision's definitions (torchvision/models/resnet.py, mobilenetv2.py).
# First 10 entries, last 5 entries, plus structural keys (downsample / bottleneck / depthwise).
TV_HEAD: dict[str, list[tuple[str, tuple[int, ...]]]] = {
    "resnet18": [("conv1.weight", (64, 3, 7, 7)), *_bn("bn1", 64)]
    + [("layer1.0.conv1.weight", (64, 64, 3, 3)), *_bn("layer1.0.bn1", 64)[:3]],
    "resnet50": [("conv1.weight", (64, 3, 7, 7)), *_bn("bn1", 64)]
    + [("layer1.0.conv1.weight", (64, 64, 1, 1)), *_bn("layer1.0.bn1", 64)[:3]],
    "mobilenet_v2": [("features.0.0.weight", (32, 3, 3, 3)), *_bn("features.0.1", 32)]
    + [("features.1.conv.0.0.weight", (32, 1, 3, 3)), *_bn("features.1.conv.0.1", 32)[:3]],
}
TV_TAIL: dict[str, list[tuple[str, tuple[int, ...]]]] = {
    "resnet18": _bn("layer4.1.bn2", 512)[2:] + [("fc.weight", (1000, 512)), ("fc.bias", (1000,))],
    "resnet50": _bn("layer4.2.bn3", 2048)[2:] + [("fc.weight", (1000, 2048)), ("fc.bias", (1000,))],
    "mobilenet_v2": _bn("features.18.1", 1280)[2:]
    + [("classifier.1.weight", (1000, 1280)), ("classifier.1.bias", (1000,))],
}
TV_STRUCTURAL: dict[str, list[tuple[str, tuple[int, ...]]]] = {
    "resnet18": [
        ("layer1.1.conv2.weight", (64, 64, 3, 3)),
        ("layer2.0.conv1.weight", (128, 64, 3, 3)),
        ("layer2.0.downsample.0.weight", (128, 64, 1, 1)),
        ("layer2.0.downsample.1.running_var", (128,)),
        ("layer3.0.downsample.0.weight", (256, 128, 1, 1)),
        ("layer4.0.downsample.0.weight", (512, 256, 1, 1)),
        ("layer4.1.conv2.weight", (512, 512, 3, 3)),
    ],
    "resnet50": [
        ("layer1.0.conv2.weight", (64, 64, 3, 3)),
        ("layer1.0.conv3.weight", (256, 64, 1, 1)),
        ("layer1.0.downsample.0.weight", (256, 64, 1, 1)),
        ("layer1.0.downsample.1.weight", (256,)),
        ("layer2.0.conv1.weight", (128, 256, 1, 1)),
        ("layer2.0.downsample.0.weight", (512, 256, 1, 1)),
        ("layer3.5.conv3.weight", (1024, 256, 1, 1)),
        ("layer4.0.downsample.0.weight", (2048, 1024, 1, 1)),
        ("layer4.2.conv1.weight", (512, 2048, 1, 1)),
    ],
    "mobilenet_v2": [
        ("features.1.conv.1.weight", (16, 32, 1, 1)),
        ("features.1.conv.2.running_var", (16,)),
        ("features.2.conv.0.0.weight", (96, 16, 1, 1)),
        ("features.2.conv.0.1.weight", (96,)),
        ("features.2.conv.1.0.weight", (96, 1, 3, 3)),
        ("features.2.conv.2.weight", (24, 96, 1, 1)),
        ("features.2.conv.3.running_mean", (24,)),
        ("features.14.conv.0.0.weight", (576, 96, 1, 1)),
        ("features.17.conv.1.0.weight", (960, 1, 3, 3)),
        ("features.17.conv.2.weight", (320, 960, 1, 1)),
        ("features.18.0.weight", (1280, 320, 1, 1)),
    ],
}
# state_dict sizes (incl. num_batches_tracked): resnet18 = 6 stem + 8 blocks * 12
# + 3 downsamples * 6 + 2 fc; resnet50 = 6 + 16 * 18 + 4 * 6 + 2;
# mobilenet_v2 = 6 stem + 12 (t=1 block) + 16 * 18 + 6 last conv + 2 classifier.
TV_KEY_COUNT = {"resnet18": 122, "resnet50": 320, "mobilenet_v2": 314}
TV_PARAMS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "mobilenet_v2": 3_504_872}


def test_registry_lists_all_models() -> None:
    assert list_models() == sorted(IMAGENET + CIFAR + ["small_cnn", "vit_tiny"])


@pytest.mark.parametrize("name", IMAGENET + CIFAR)
def test_forward_shape(name: str) -> None:
    size = 64 if name in IMAGENET else 32
    expected_classes = 1000 if name in IMAGENET else 10
    with torch.no_grad():
        out = _model(name)(torch.randn(2, 3, size, size))
    assert out.shape == (2, expected_classes)
    assert torch.isfinite(out).all()


def test_default_input_size() -> None:
    for name in IMAGENET:
        assert default_input_size(name) == (3, 224, 224)
    for name in CIFAR:
        assert default_input_size(name) == (3, 32, 32)


def test_num_classes_override() -> None:
    m = create_model("resnet20", num_classes=100)
    assert m.fc.out_features == 100
    m = create_model("mobilenet_v2", num_classes=7)
    assert m.classifier[1].out_features == 7


@pytest.mark.parametrize("name", IMAGENET)
def test_param_count_matches_torchvision(name: str) -> None:
    assert _n_params(_model(name)) == TV_PARAMS[name]


def test_cifar_param_counts() -> None:
    # He et al. report 0.27M / 0.85M (option-A shortcuts); projections add a few thousand.
    assert 265_000 < _n_params(_model("resnet20")) < 280_000
    assert 845_000 < _n_params(_model("resnet56")) < 865_000


@pytest.mark.parametrize("name", IMAGENET)
def test_state_dict_keys_match_torchvision(name: str) -> None:
    items = [(k, tuple(v.shape)) for k, v in _model(name).state_dict().items()]
    assert len(items) == TV_KEY_COUNT[name]
    assert items[:10] == TV_HEAD[name]
    assert items[-5:] == TV_TAIL[name]
    shapes = dict(items)
    for key, shape in TV_STRUCTURAL[name]:
        assert shapes.get(key) == shape, key


def test_cifar_resnet_key_naming() -> None:
    keys = _model("resnet20").state_dict().keys()
    assert "layer2.0.downsample.0.weight" in keys
    assert "layer3.0.downsample.1.running_var" in keys
    assert "layer1.0.downsample.0.weight" not in keys
    assert not any(k.startswith("layer4") for k in keys)
    assert _model("resnet20").conv1.weight.shape == (16, 3, 3, 3)
    assert _model("resnet56").layer3[8].conv2.weight.shape == (64, 64, 3, 3)


def test_mobilenet_v2_cifar_layout() -> None:
    cifar, imagenet = _model("mobilenet_v2_cifar"), _model("mobilenet_v2")
    assert list(cifar.state_dict().keys()) == list(imagenet.state_dict().keys())
    with torch.no_grad():
        feats = cifar.features(torch.randn(2, 3, 32, 32))
    assert feats.shape == (2, 1280, 4, 4)


@pytest.mark.parametrize("name", IMAGENET + CIFAR)
def test_state_dict_roundtrip_strict(name: str) -> None:
    src = _model(name)
    torch.manual_seed(1)
    dst = create_model(name).eval()
    dst.load_state_dict(src.state_dict(), strict=True)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, src.state_dict()[k]), k
    size = 64 if name in IMAGENET else 32
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(src(x), dst(x))


def test_unknown_model_lists_available() -> None:
    with pytest.raises(ValueError) as exc:
        create_model("resnet9000")
    msg = str(exc.value)
    assert "resnet9000" in msg
    assert ", ".join(sorted(IMAGENET + CIFAR)) in msg
    with pytest.raises(ValueError):
        default_input_size("nope")


def test_register_duplicate_rejected() -> None:
    with pytest.raises(ValueError):
        register_model("resnet18", lambda num_classes=1: nn.Linear(1, num_classes))


def test_vit_tiny_shape_size_and_input_kwargs() -> None:
    from pof.models import input_kwargs

    model = create_model("vit_tiny")
    assert 300_000 < sum(p.numel() for p in model.parameters()) < 600_000
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert input_kwargs("vit_tiny", (1, 8, 8)) == {"in_channels": 1, "image_size": 8}
    assert input_kwargs("resnet20", (1, 8, 8)) == {}
    digits = create_model("vit_tiny", **input_kwargs("vit_tiny", (1, 8, 8)))
    assert digits(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="divisible by patch_size"):
        create_model("vit_tiny", image_size=30)


def test_resnet20_gn_has_no_batchnorm_and_trains_a_range_without_re_estimation() -> None:

    import pof

    torch.manual_seed(0)
    model = create_model("resnet20_gn")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in model.modules()) == 21
    method = pof.OnTheFly(model, (0.3, 0.9), distill=1.0)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    loss = train_steps(model, method, x, y, 2)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="norm must be"):
        create_model("resnet20", norm="layer")
