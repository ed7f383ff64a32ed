"""A small Vision Transformer on ``nn.TransformerEncoder`` (pre-norm), for 32x32 images."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .registry import CIFAR_INPUT, register_model


class ViT(nn.Module):
    """Patch embedding (a strided conv), class token, learned positions, encoder, head.

    ``image_size`` is the input's height and width (square); it must divide by
    ``patch_size``. State-dict keys: ``patch_embed``, ``cls_token``, ``pos_embed``,
    ``encoder.layers.N.{self_attn,linear1,linear2,norm1,norm2}``, ``norm``, ``head``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 patch_size: int = 4, dim: int = 96, depth: int = 6, heads: int = 4,
                 mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size "
                             f"{patch_size}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout,
                                           activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, patches, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        x = self.norm(self.encoder(x))
        return self.head(x[:, 0])


@register_model("vit_tiny", num_classes=10, input_size=CIFAR_INPUT)
def vit_tiny(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
             **kwargs) -> ViT:
    """ViT with patch 4, width 96, 6 layers, 4 heads, MLP 192 (about 0.45M parameters)."""
    return ViT(num_classes, in_channels, image_size, **kwargs)
