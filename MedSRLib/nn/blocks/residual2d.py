"""The EDSR residual block in 2D (no batch norm), shared by SMORE's refiner and MIASSR's encoder."""
import torch
from torch import nn


class ResidualBlock2d(nn.Module):
    """conv → ReLU (or LeakyReLU with ``negative_slope``) → conv, added back scaled by ``residual_scale``."""

    def __init__(self, features: int, residual_scale: float, negative_slope: float = 0.0):
        super().__init__()
        activation = nn.LeakyReLU(negative_slope, inplace=True) if negative_slope else nn.ReLU(inplace=True)
        self.body = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), activation,
                                  nn.Conv2d(features, features, 3, padding=1))
        self.residual_scale = residual_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual_scale * self.body(x)
