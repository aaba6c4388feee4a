"""DCSRN (Chen et al. 2018): a densely connected 3D network that works on the high-resolution grid.

Its input is already on the output grid (k-space truncated in training, Fourier-interpolated at inference; see
``MedSRLib.methods.dcsrn``), so the network keeps the shape. Conv3d k3 to ``2·growth`` features → one dense block of
``units`` units (BatchNorm → ELU → Conv3d k3 adding ``growth`` channels, each seeing all earlier outputs) → Conv3d k1
to one channel. ``residual=True`` (MedSR's choice, not in the paper) adds the input back, so the network learns only
the missing detail, which trains much faster on small budgets.
"""
import torch
from torch import nn

from MedSRLib.nn.registry import register_architecture


class DenseUnit3d(nn.Module):
    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.layers = nn.Sequential(nn.BatchNorm3d(in_channels), nn.ELU(inplace=True),
                                    nn.Conv3d(in_channels, growth, kernel_size=3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layers(x)], dim=1)


@register_architecture("dcsrn3d")
class DCSRN3d(nn.Module):
    """(B, in_channels, D, H, W) → the same shape."""

    def __init__(self, in_channels: int = 1, growth: int = 24, units: int = 4, residual: bool = True):
        super().__init__()
        self.head = nn.Conv3d(in_channels, 2 * growth, kernel_size=3, padding=1)
        self.dense = nn.Sequential(*(DenseUnit3d(2 * growth + n * growth, growth) for n in range(units)))
        self.tail = nn.Conv3d(2 * growth + units * growth, in_channels, kernel_size=1)
        self.residual = residual
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        if residual:
            nn.init.zeros_(self.tail.weight)  # start as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tail(self.dense(self.head(x)))
        return x + out if self.residual else out
