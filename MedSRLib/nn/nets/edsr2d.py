"""EDSR-style 2D refinement network for through-plane slices that are already interpolated onto the output grid (SMORE).

The degraded axis is the first spatial axis (rows). ``fold`` consecutive rows are stacked into channels (space-to-depth
along the rows only), so the residual blocks run at 1/fold of the row resolution: ``fold`` times cheaper, with a
receptive field ``fold`` times longer along the degraded axis, where the missing detail is spread. The output is the
input plus a learned correction; the correction's last conv starts at zero, so the untrained network returns its input.
"""
import torch
from torch import nn
from torch.nn import functional

from MedSRLib.nn.blocks.residual import ResidualBlock
from MedSRLib.nn.registry import register_architecture


def fold_rows(x: torch.Tensor, fold: int) -> torch.Tensor:
    """(B, 1, H, W) → (B, fold, H / fold, W): channel c of output row r is input row r·fold + c."""
    batch, _, height, width = x.shape
    return x.reshape(batch, height // fold, fold, width).permute(0, 2, 1, 3)


def unfold_rows(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`fold_rows`."""
    batch, fold, height, width = x.shape
    return x.permute(0, 2, 1, 3).reshape(batch, 1, height * fold, width)


@register_architecture("edsr2d")
class EDSR2d(nn.Module):
    """(B, 1, H, W) → (B, 1, H, W) for any H, W; rows are padded to a multiple of ``fold`` internally."""

    def __init__(self, features: int = 32, blocks: int = 8, fold: int = 4, residual_scale: float = 0.1):
        super().__init__()
        self.fold = fold
        self.head = nn.Conv2d(fold, features, 3, padding=1)
        self.body = nn.Sequential(*(ResidualBlock(features, residual_scale) for _ in range(blocks)),
                                  nn.Conv2d(features, features, 3, padding=1))
        self.tail = nn.Conv2d(features, fold, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[-2]
        padded = functional.pad(x, (0, 0, 0, -height % self.fold), mode="replicate")
        shallow = self.head(fold_rows(padded, self.fold))
        correction = unfold_rows(self.tail(shallow + self.body(shallow)))
        return x + correction[..., :height, :]
