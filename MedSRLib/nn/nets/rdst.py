"""RDST and RDST-E (J. Zhu's thesis, ch. 5, eqs. 5.2–5.7, Fig. 5.1): the residual dense Swin transformer for 2D ×4
super-resolution.

head (3×3 conv, 1 → d) → ``blocks`` × RDSTB → 3×3 conv, plus the global residual from the head (eq. 5.3) →
sub-pixel upsampler (eq. 5.4). An RDSTB is three dense Swin transformer blocks (DSTBs) and a 3×3 local-feature-fusion
conv from d + 3g back to d, added to its input (eq. 5.7). A DSTB is two Swin layers (regular, then shifted windows,
eq. 5.5) and an MLP bottleneck to g features concatenated to its input (eq. 5.6), so the three DSTBs of a block run
on d, d + g and d + 2g features: with d = 60, g = 30, window 8, 6 heads, MLP ratio 2 that gives the thesis's parameter
counts (4.40 M for RDST, n = 8; 2.35 M for RDST-E, n = 4; here 4.53 M and 2.45 M with the upsampler below).

Where the thesis leaves a choice open, this follows SwinIR, which RDST builds on: the MLP bottleneck is one Linear
layer (a 1×1 conv); the body's closing conv (C_k×k of eq. 5.3) is 3×3; drop-path rates rise linearly from 0 to
``drop_path`` over the network's Swin layers; the upsampler is SwinIR's "pixelshuffle" one (3×3 conv to
``upsampler_features``, LeakyReLU, then per ×2 a 3×3 conv and PixelShuffle(2), then a 3×3 conv to one channel); the
relative position biases start as a truncated normal of std 0.02 and every conv and Linear keeps PyTorch's default
Kaiming-uniform initialisation (the thesis: Kaiming-uniform). The input is padded to window multiples by repeating its
edge pixels and the output cropped back.

``skip="lanczos"`` (not in the thesis) adds the output to the Lanczos-3 interpolation of the input (the ``lanczos``
method's, as a fixed layer) and starts the last conv at zero, so the untrained network *is* Lanczos and a CPU
training budget goes into detail only.
"""
import math

import torch
from torch import nn

from MedSRLib.nn.blocks.interpolation import LanczosUpsample3d
from MedSRLib.nn.blocks.swin import SwinLayer, crop_to, pad_to_multiple, shifted_window_mask
from MedSRLib.nn.registry import register_architecture

SKIPS = ("none", "lanczos")
DENSE_BLOCKS_PER_RDSTB = 3


class DenseSwinBlock(nn.Module):
    """DSTB (eq. 5.6): (B, H, W, C) → (B, H, W, C + growth), the input concatenated with a bottleneck of two Swin
    layers' output."""

    def __init__(self, features: int, growth: int, heads: int, window: int, mlp_ratio: float, drop_paths):
        super().__init__()
        self.layers = nn.ModuleList(
            SwinLayer(features, heads, window, shift=(window // 2) * index, mlp_ratio=mlp_ratio, drop_path=rate)
            for index, rate in enumerate(drop_paths))
        self.bottleneck = nn.Linear(features, growth)

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor) -> torch.Tensor:
        features = x
        for layer in self.layers:
            features = layer(features, shift_mask)
        return torch.cat([x, self.bottleneck(features)], dim=-1)


class ResidualDenseSwinBlock(nn.Module):
    """RDSTB (eq. 5.7): (B, d, H, W) → same shape; three DSTBs, then a 3×3 fusion conv d + 3g → d, plus the input."""

    def __init__(self, features: int, growth: int, heads: int, window: int, mlp_ratio: float, drop_paths):
        super().__init__()
        self.dense = nn.ModuleList(
            DenseSwinBlock(features + index * growth, growth, heads, window, mlp_ratio, drop_paths[2 * index:][:2])
            for index in range(DENSE_BLOCKS_PER_RDSTB))
        self.fusion = nn.Conv2d(features + DENSE_BLOCKS_PER_RDSTB * growth, features, 3, padding=1)

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor) -> torch.Tensor:
        dense = x.permute(0, 2, 3, 1)
        for block in self.dense:
            dense = block(dense, shift_mask)
        return x + self.fusion(dense.permute(0, 3, 1, 2))


@register_architecture("rdst")
class RDST(nn.Module):
    """(B, 1, H, W) → (B, 1, scale·H, scale·W) for any H, W."""

    def __init__(self, features: int = 60, growth: int = 30, blocks: int = 8, window: int = 8, heads: int = 6,
                 mlp_ratio: float = 2.0, drop_path: float = 0.1, upsampler_features: int = 64, scale: int = 4,
                 skip: str = "none"):
        super().__init__()
        if skip not in SKIPS:
            raise ValueError(f"skip must be one of {', '.join(SKIPS)}, not {skip!r}")
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"scale must be a power of two (×2 pixel-shuffle stages), not {scale!r}")
        for width in range(features, features + DENSE_BLOCKS_PER_RDSTB * growth, growth):
            if width % heads:
                raise ValueError(f"the dense blocks' widths ({features} + k·{growth}) must split into {heads} heads")
        self.window, self.scale = window, scale
        layers_per_block = 2 * DENSE_BLOCKS_PER_RDSTB
        rates = torch.linspace(0, drop_path, blocks * layers_per_block).tolist()
        self.head = nn.Conv2d(1, features, 3, padding=1)
        self.body = nn.ModuleList(
            ResidualDenseSwinBlock(features, growth, heads, window, mlp_ratio,
                                   rates[index * layers_per_block:][:layers_per_block])
            for index in range(blocks))
        self.body_conv = nn.Conv2d(features, features, 3, padding=1)
        stages = []
        for _ in range(int(math.log2(scale))):
            stages += [nn.Conv2d(upsampler_features, 4 * upsampler_features, 3, padding=1), nn.PixelShuffle(2)]
        self.upsampler = nn.Sequential(nn.Conv2d(features, upsampler_features, 3, padding=1),
                                       nn.LeakyReLU(inplace=True), *stages)
        self.output = nn.Conv2d(upsampler_features, 1, 3, padding=1)
        self.interpolation = LanczosUpsample3d((1, scale, scale)) if skip == "lanczos" else None
        if self.interpolation is not None:
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, self.window)
        shift_mask = shifted_window_mask(*padded.shape[-2:], self.window, self.window // 2).to(x.device)
        shallow = self.head(padded)
        deep = shallow
        for block in self.body:
            deep = block(deep, shift_mask)
        output = self.output(self.upsampler(shallow + self.body_conv(deep)))
        output = crop_to(output, (self.scale * height, self.scale * width))
        if self.interpolation is not None:
            output = output + self.interpolation(x[:, :, None]).squeeze(2)
        return output
