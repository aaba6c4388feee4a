"""MIASSR (J. Zhu's thesis, ch. 4): one 2D network for any in-plane scale — an EDSR-lite encoder on the low-resolution
slice and a Meta-Upscale layer whose per-pixel 3×3 filters are predicted from the scale and the pixel's position.

Meta-Upscale, on MedSR's corner-aligned grid: output pixel centre ``c`` (in low-resolution pixel indices, as the
engine's ``coordinates`` give it) lies in the low-resolution pixel ``p = ⌊c + 0.5⌋``, at offset ``c + 0.5 − p`` ∈ [0, 1)
from that pixel's outer corner — Meta-SR's (⌊i/s⌋, i/s − ⌊i/s⌋) with pixel centres instead of corners. Pos2Weight maps
(1/s_rows, 1/s_columns, offset_rows, offset_columns) through Linear → ReLU → Linear to the 3·3·C weights of the filter
applied to the encoder features around ``p``. The thesis feeds one 1/s (its scales are isotropic); MedSR's scales are
per axis, so both are given.

``skip="bicubic"`` (not in the thesis) adds the output to a bicubic interpolation of the input at the same positions
and starts Pos2Weight's last layer at zero, so the untrained network *is* bicubic interpolation and a CPU training
budget goes into detail only. Weights are Kaiming-uniform initialised for the LeakyReLU slope, as in the thesis.
"""
import torch
from torch import nn
from torch.nn import functional

from MedSRLib.nn.blocks.residual import ResidualBlock
from MedSRLib.nn.registry import register_architecture

NEGATIVE_SLOPE = 0.2
SKIPS = ("none", "bicubic")
POSITION_STEPS = 2 ** 16


def meta_positions(coordinates: torch.Tensor, size: int):
    """(low-resolution pixel index, offset from its outer corner) of each output pixel along one axis."""
    shifted = coordinates + 0.5
    pixel = torch.floor(shifted)
    return pixel.clamp(0, size - 1).long(), shifted - pixel


def sample_bicubic(image: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
    """``image`` (B, 1, H, W) at ``coordinates`` (B, 2, h, w) in pixel indices; edges clamped."""
    size = torch.tensor(image.shape[-2:], dtype=coordinates.dtype, device=coordinates.device)
    normalised = 2 * coordinates / (size - 1).clamp(min=1).view(1, 2, 1, 1) - 1
    grid = normalised.flip(1).permute(0, 2, 3, 1)  # grid_sample wants (column, row) last
    return functional.grid_sample(image, grid, mode="bicubic", padding_mode="border", align_corners=True)


class Pos2Weight(nn.Module):
    """(N, 4) scale-and-offset rows → (N, 3·3·features) filter weights.

    The weights are divided by √(3·3·features), the fan-in of the filter they form: without it, Adam's first
    sign-like steps move every one of the 3·3·features weights of every pixel the same way and the output jumps by
    hundreds of times the image range (measured: the L1 loss went from 0.02 to 45 in three steps)."""

    def __init__(self, features: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 9 * features))
        self.fan_in_scale = (9 * features) ** -0.5

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.layers(positions) * self.fan_in_scale


@register_architecture("miassr")
class MIASSR(nn.Module):
    """forward(x (B, 1, H, W), coordinates (B, 2, h, w), scale (B, 2)) → (B, 1, h, w)."""

    def __init__(self, features: int = 64, blocks: int = 16, hidden: int = 256, residual_scale: float = 1.0,
                 skip: str = "none"):
        super().__init__()
        if skip not in SKIPS:
            raise ValueError(f"skip must be one of {', '.join(SKIPS)}, not {skip!r}")
        self.skip = skip
        self.head = nn.Conv2d(1, features, 3, padding=1)
        self.body = nn.Sequential(*(ResidualBlock(features, residual_scale, NEGATIVE_SLOPE) for _ in range(blocks)),
                                  nn.Conv2d(features, features, 3, padding=1))
        self.pos2weight = Pos2Weight(features, hidden)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(module.weight, a=NEGATIVE_SLOPE)
                nn.init.zeros_(module.bias)
        if skip == "bicubic":
            nn.init.zeros_(self.pos2weight.layers[-1].weight)

    def forward(self, x: torch.Tensor, coordinates: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        shallow = self.head(x)
        features = shallow + self.body(shallow)
        batch, channels, height, width = features.shape
        out_height, out_width = coordinates.shape[-2:]
        rows, row_offsets = meta_positions(coordinates[:, 0], height)
        columns, column_offsets = meta_positions(coordinates[:, 1], width)
        # Every pixel's 3×3 neighbourhood of features, then the one each output pixel reads.
        neighbourhoods = functional.unfold(features, 3, padding=1)  # (B, 9·C, H·W)
        index = (rows * width + columns).view(batch, 1, -1).expand(-1, 9 * channels, -1)
        gathered = neighbourhoods.gather(2, index)  # (B, 9·C, h·w)
        inverse_scale = (1 / scale).view(batch, 2, 1, 1).expand(-1, -1, out_height, out_width)
        positions = torch.cat([inverse_scale, row_offsets[:, None], column_offsets[:, None]], dim=1)
        # At a rational scale p/q the offsets repeat every p pixels: Pos2Weight runs once per distinct position
        # (25 at ×2.5, 16 at ×4 instead of one per output pixel). Rounding to 2⁻¹⁶ merges positions that float32
        # arithmetic made differ in their last bits.
        positions = torch.round(positions * POSITION_STEPS) / POSITION_STEPS
        distinct, which = torch.unique(positions.permute(0, 2, 3, 1).reshape(-1, 4), dim=0, return_inverse=True)
        weights = self.pos2weight(distinct)[which]
        weights = weights.view(batch, out_height * out_width, 9 * channels).transpose(1, 2)
        output = (gathered * weights).sum(dim=1).view(batch, 1, out_height, out_width)
        if self.skip == "bicubic":
            output = output + sample_bicubic(x, coordinates)
        return output
