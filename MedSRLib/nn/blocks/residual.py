"""The EDSR residual block (no batch norm) in 2D or 3D, shared by SMORE's refiner, MIASSR's and ArSSR's encoders."""
import torch
from torch import nn

CONVOLUTIONS = {2: nn.Conv2d, 3: nn.Conv3d}


class ResidualBlock(nn.Module):
    """conv → ReLU (or LeakyReLU with ``negative_slope``) → conv, added back scaled by ``residual_scale``;
    ``dims`` 2 or 3."""

    def __init__(self, features: int, residual_scale: float, negative_slope: float = 0.0, dims: int = 2):
        super().__init__()
        convolution = CONVOLUTIONS[dims]
        activation = nn.LeakyReLU(negative_slope, inplace=True) if negative_slope else nn.ReLU(inplace=True)
        self.body = nn.Sequential(convolution(features, features, 3, padding=1), activation,
                                  convolution(features, features, 3, padding=1))
        self.residual_scale = residual_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual_scale * self.body(x)
