"""Instance-norm 3D patch critic of the three-player GAN (METHODS.md §1, from the authors' code).

Each block: Conv3d k3 s1 → InstanceNorm3d (skipped in the first block) → LeakyReLU 0.2 → Conv3d k3 s2 → InstanceNorm3d →
LeakyReLU 0.2; then a Conv3d k3 to one channel. The output is a map of raw logits (no sigmoid), one per receptive
field: 4×4×4 for a 64³ input with the default four blocks. Instance norm needs more than one voxel per map, so the
input must be at least 2 · 2^blocks voxels along each axis (32 for four blocks).
"""
from typing import List, Sequence

import torch
from torch import nn

from MedSRLib.nn.registry import register_architecture

NEGATIVE_SLOPE = 0.2


@register_architecture("patch_critic3d")
class PatchCritic3d(nn.Module):
    """(B, in_channels, D, H, W) → (B, 1, D / 2^n, H / 2^n, W / 2^n) logits, n = len(filters)."""

    def __init__(self, in_channels: int = 1, filters: Sequence[int] = (64, 128, 256, 512)):
        super().__init__()
        layers: List[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(filters):
            layers.append(nn.Conv3d(channels, width, kernel_size=3, padding=1))
            if index > 0:
                layers.append(nn.InstanceNorm3d(width, affine=True))
            layers += [nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
                       nn.Conv3d(width, width, kernel_size=3, stride=2, padding=1),
                       nn.InstanceNorm3d(width, affine=True), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)]
            channels = width
        layers.append(nn.Conv3d(channels, 1, kernel_size=3, padding=1))
        self.layers = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
