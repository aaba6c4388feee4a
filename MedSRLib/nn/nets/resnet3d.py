"""3D ResNet10 feature extractor: the convolutional part of a 3D ResNet with one BasicBlock per stage.

The three-player GAN's third player (METHODS.md §1): random (Kaiming) initialisation, trained with the generator, its
output compared between SR and HR by the perceptual loss. Stem: Conv3d k7 s2 → BatchNorm → ReLU → MaxPool k3 s2; then
four stages of ``widths`` channels. Stage 2 halves the grid; as in MedicalNet's 3D ResNets, stages 3 and 4 keep it and
dilate their convolutions (2 and 4) instead, so a 64³ patch gives an 8³ feature map rather than a 2³ one.
"""
from typing import Sequence

import torch
from torch import nn

from MedSRLib.nn.registry import register_architecture

STAGE_STRIDES = (1, 2, 1, 1)
STAGE_DILATIONS = (1, 1, 2, 4)


class BasicBlock3d(nn.Module):
    """Two 3×3×3 convs with batch norm and an identity (or 1×1×1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation,
                               bias=False)
        self.norm1 = nn.BatchNorm3d(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm2 = nn.BatchNorm3d(out_channels)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm3d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        return self.act(self.norm2(self.conv2(out)) + self.shortcut(x))


@register_architecture("resnet10_3d")
class ResNet10Features3d(nn.Module):
    """(B, in_channels, D, H, W) → (B, widths[-1], D/8, H/8, W/8) features (rounded up per stride)."""

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (64, 128, 256, 512)):
        super().__init__()
        if len(widths) != len(STAGE_STRIDES):
            raise ValueError(f"ResNet10 has {len(STAGE_STRIDES)} stages; got {len(widths)} widths")
        self.stem = nn.Sequential(nn.Conv3d(in_channels, widths[0], 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm3d(widths[0]), nn.ReLU(inplace=True),
                                  nn.MaxPool3d(3, stride=2, padding=1))
        stages = []
        channels = widths[0]
        for width, stride, dilation in zip(widths, STAGE_STRIDES, STAGE_DILATIONS):
            stages.append(BasicBlock3d(channels, width, stride, dilation))
            channels = width
        self.stages = nn.Sequential(*stages)
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))
