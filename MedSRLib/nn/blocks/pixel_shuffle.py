"""Sub-pixel upsampling for volumes: the 3D counterpart of ``torch.nn.PixelShuffle``.

Channel ordering, extending the 2D rule ``channel c·r² + a·r + b → pixel (c, h·r + a, w·r + b)`` to three axes with
per-axis factors (rd, rh, rw): input channel ``c·rd·rh·rw + a·rh·rw + b·rw + e`` at voxel (d, h, w) becomes output
voxel ``(c, d·rd + a, h·rh + b, w·rw + e)``. The depth offset varies slowest and the width offset fastest, as in 2D.
"""
from typing import Sequence, Tuple, Union

import torch

Scale3d = Union[int, Sequence[int]]


def scale_triple(scale: Scale3d) -> Tuple[int, int, int]:
    """``2`` → ``(2, 2, 2)``; a sequence of three positive integers is returned as a tuple."""
    factors = (scale,) * 3 if isinstance(scale, int) else tuple(scale)
    if len(factors) != 3 or not all(isinstance(f, int) and f >= 1 for f in factors):
        raise ValueError(f"scale must be a positive integer or three positive integers, got {scale!r}")
    return factors


class PixelShuffle3d(torch.nn.Module):
    """(B, C·rd·rh·rw, D, H, W) → (B, C, rd·D, rh·H, rw·W); ``scale`` is one factor or (rd, rh, rw)."""

    def __init__(self, scale: Scale3d):
        super().__init__()
        self.factors = scale_triple(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rd, rh, rw = self.factors
        batch, channels, depth, height, width = x.shape
        group = rd * rh * rw
        if channels % group:
            raise ValueError(f"PixelShuffle3d{self.factors} needs channels divisible by {group}, got {channels}")
        x = x.reshape(batch, channels // group, rd, rh, rw, depth, height, width)
        # Interleave each offset axis right after its spatial axis: (B, C, D, rd, H, rh, W, rw).
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
        return x.reshape(batch, channels // group, depth * rd, height * rh, width * rw)

    def extra_repr(self) -> str:
        return f"scale={self.factors}"
