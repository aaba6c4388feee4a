"""A small 2D segmentation U-Net (Ronneberger et al. 2015) with residual encoder blocks: RDST-E's segmentation-based
perceptual loss (thesis ch. 5, L_E(1)) compares the first encoder block's maps of the SR and HR slices.

Its encoder is a network of its own (``segmentation_unet2d_encoder``, every block's maps, finest first), so that the
first block alone can be exported as a frozen 2D feature network (:meth:`SegmentationUNet2d.feature_network`).
"""
import copy
import itertools
from typing import List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional

from ..blocks.residual import ResidualBlock
from ..blocks.swin import crop_to, pad_to_multiple
from ..registry import register_architecture

ENCODER_ARCHITECTURE = "segmentation_unet2d_encoder"


@register_architecture(ENCODER_ARCHITECTURE)
class UNetEncoder2d(nn.Module):
    """(B, in_channels, H, W) → the maps of every encoder block, finest first: block i has ``widths[i]`` channels at
    1/2^i of the input size. A block is a 2×2 max-pool (all but the first), a 3×3 conv with ReLU and a residual
    block; the first works at full resolution, so its maps see the finest detail."""

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (16, 32, 64, 128)):
        super().__init__()
        self.in_channels, self.widths = in_channels, list(widths)
        blocks, channels = [], in_channels
        for index, width in enumerate(widths):
            layers = [nn.MaxPool2d(2)] if index else []
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True),
                       ResidualBlock(width, residual_scale=1.0), nn.ReLU(inplace=True)]
            blocks.append(nn.Sequential(*layers))
            channels = width
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return list(itertools.accumulate(self.blocks, lambda y, block: block(y), initial=x))[1:]


@register_architecture("segmentation_unet2d")
class SegmentationUNet2d(nn.Module):
    """(B, in_channels, H, W) → (B, classes, H, W) logits. Each decoder level upsamples the deeper map bilinearly,
    concatenates the encoder's map of its size and applies two 3×3 convs with ReLU; a 1×1 conv gives the logits.
    Inputs of any size: padded to a multiple of 2^(levels − 1) and cropped back."""

    def __init__(self, in_channels: int = 1, classes: int = 3, widths: Sequence[int] = (16, 32, 64, 128)):
        super().__init__()
        self.encoder = UNetEncoder2d(in_channels, widths)
        self.decoder = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width + deeper, width, 3, padding=1), nn.ReLU(inplace=True),
                          nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True))
            for width, deeper in zip(widths[:-1], widths[1:]))
        self.head = nn.Conv2d(widths[0], classes, 1)
        self.multiple = 2 ** (len(widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        maps = self.encoder(pad_to_multiple(x, self.multiple))
        y = maps[-1]
        for skip, level in zip(reversed(maps[:-1]), reversed(self.decoder)):
            y = functional.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = level(torch.cat([skip, y], dim=1))
        return crop_to(self.head(y), tuple(size))

    def feature_network(self, blocks: int = 1) -> Tuple[UNetEncoder2d, dict]:
        """A copy of the first ``blocks`` encoder blocks as a feature network (its forward: their maps, a list) and
        its architecture ({name, params}): what a perceptual loss freezes (the thesis's L_E(1): ``blocks=1``)."""
        encoder = self.encoder
        params = {"in_channels": encoder.in_channels, "widths": encoder.widths[:blocks]}
        features = UNetEncoder2d(**params)
        features.blocks = copy.deepcopy(encoder.blocks[:blocks])
        return features, {"name": ENCODER_ARCHITECTURE, "params": params}
