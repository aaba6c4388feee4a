"""3D RRDB generator (ESRGAN's residual-in-residual dense blocks, in 3D), as used by the three-player GAN.

head conv → ``blocks`` × RRDB → trunk conv, plus a global skip from the head → conv to features·r³ → LeakyReLU →
PixelShuffle3d(r) → conv → LeakyReLU → conv to ``in_channels``. No batch norm. ``scale=1`` builds a same-size network.

``skip="lanczos"`` (not in the paper) adds the Lanczos-3 interpolation of the input to the output and zero-initialises
the last conv, so the untrained network is exactly the ``lanczos`` method and training learns only the residual detail
(how the shipped CPU-budget threeplayer-x2 model was trained).
"""
import math
from typing import List

import torch
from torch import nn

from MedSRLib.nn.registry import register_architecture
from MedSRLib.nn.blocks.interpolation import LanczosUpsample3d
from MedSRLib.nn.blocks.pixel_shuffle import PixelShuffle3d, Scale3d, scale_triple

RESIDUAL_SCALE = 0.2
NEGATIVE_SLOPE = 0.2
# ESRGAN shrinks the initial weights of convs inside residual branches so the untrained network starts near identity.
RESIDUAL_INIT_SCALE = 0.1
SKIPS = ("none", "lanczos")


def _conv(in_channels: int, out_channels: int) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)


def _kaiming_init(convs: List[nn.Conv3d], scale: float) -> None:
    for conv in convs:
        nn.init.kaiming_normal_(conv.weight, a=0.0, mode="fan_in")
        conv.weight.data.mul_(scale)
        nn.init.zeros_(conv.bias)


class DenseBlock3d(nn.Module):
    """Five densely connected 3×3×3 convs; conv n sees the input and all previous outputs (``growth`` channels each)."""

    def __init__(self, features: int, growth: int):
        super().__init__()
        self.convs = nn.ModuleList(_conv(features + n * growth, growth) for n in range(4))
        self.fuse = _conv(features + 4 * growth, features)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
        _kaiming_init([*self.convs, self.fuse], RESIDUAL_INIT_SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in self.convs:
            features.append(self.act(conv(torch.cat(features, dim=1))))
        return x + RESIDUAL_SCALE * self.fuse(torch.cat(features, dim=1))


class RRDB3d(nn.Module):
    """Three dense blocks in sequence, wrapped in a scaled residual connection."""

    def __init__(self, features: int, growth: int):
        super().__init__()
        self.dense_blocks = nn.Sequential(*(DenseBlock3d(features, growth) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + RESIDUAL_SCALE * self.dense_blocks(x)


@register_architecture("rrdb3d")
class RRDBNet3d(nn.Module):
    """(B, in_channels, D, H, W) → (B, in_channels, rD, rH, rW); ``scale`` is one factor r or per-axis (rd, rh, rw)."""

    def __init__(self, in_channels: int = 1, features: int = 64, growth: int = 32, blocks: int = 3, scale: Scale3d = 2,
                 skip: str = "none"):
        super().__init__()
        if skip not in SKIPS:
            raise ValueError(f"skip must be one of {SKIPS}, got {skip!r}")
        factors = scale_triple(scale)
        self.head = _conv(in_channels, features)
        self.body = nn.Sequential(*(RRDB3d(features, growth) for _ in range(blocks)))
        self.trunk = _conv(features, features)
        upsample: List[nn.Module] = []
        if factors != (1, 1, 1):
            upsample = [_conv(features, features * math.prod(factors)), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
                        PixelShuffle3d(factors)]
        self.upsample = nn.Sequential(*upsample)
        self.tail = nn.Sequential(_conv(features, features), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
                                  _conv(features, in_channels))
        _kaiming_init([m for m in (self.head, self.trunk, *self.upsample, *self.tail) if isinstance(m, nn.Conv3d)], 1.0)
        self.interpolation = LanczosUpsample3d(factors) if skip == "lanczos" else None
        if self.interpolation is not None:
            nn.init.zeros_(self.tail[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.head(x)
        deep = self.trunk(self.body(shallow))
        detail = self.tail(self.upsample(shallow + deep))
        return detail if self.interpolation is None else detail + self.interpolation(x)
