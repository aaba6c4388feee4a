"""ArSSR (Wu et al., "An arbitrary scale super-resolution approach for 3D MR images via implicit neural
representation", 2022; METHODS.md §1 baselines): one 3D network for any float factor per axis — a convolutional encoder
on the low-resolution volume and an MLP decoder queried at every output voxel's continuous position.

Encoder: ResCNN (the lightest of the paper's three encoders): conv → ``blocks`` residual blocks → conv, added to the
first conv's features, on the LR grid. Decoder query, on MedSR's corner-aligned grid: output voxel centre ``c`` (in LR
voxel indices, as the engine's ``coordinates`` give it) reads the features of the nearest LR voxel ``p = ⌊c + 0.5⌋``
and is told its offset ``c − p`` ∈ [−0.5, 0.5) and the inverse factor 1/s per axis (LIIF's "cell", so one model knows
how large the voxel it predicts is); the MLP (``layers`` Linear layers of ``hidden`` units, ReLU) maps
(features, offset, 1/s) to the intensity. The paper's decoder is 8 layers of 256 units fed trilinearly interpolated
features and the coordinate; MedSR's is smaller (CPU budget) and uses the nearest-feature + offset query.

``skip="lanczos"`` (not in the paper) adds the output to a Lanczos-3 interpolation of the input at the same positions
and starts the MLP's last layer at zero, so the untrained network *is* the ``lanczos`` method and training learns
only the missing detail.
"""
import torch
from torch import nn

from MedSRLib.nn.blocks.interpolation import lanczos_sample3d
from MedSRLib.nn.blocks.residual import ResidualBlock
from MedSRLib.nn.registry import register_architecture

SKIPS = ("none", "lanczos")
DECODER_CHUNK = 2 ** 16


def nearest_voxel(coordinates: torch.Tensor, size: int):
    """(nearest LR voxel index, offset from its centre in [−0.5, 0.5)) of each output position along one axis."""
    nearest = torch.floor(coordinates + 0.5)
    return nearest.clamp(0, size - 1).long(), coordinates - nearest


@register_architecture("arssr")
class ArSSR(nn.Module):
    """forward(x (B, 1, D, H, W), coordinates (B, 3, d, h, w), scale (B, 3)) → (B, 1, d, h, w)."""

    def __init__(self, features: int = 32, blocks: int = 4, hidden: int = 64, layers: int = 4,
                 residual_scale: float = 1.0, skip: str = "none"):
        super().__init__()
        if skip not in SKIPS:
            raise ValueError(f"skip must be one of {', '.join(SKIPS)}, not {skip!r}")
        if layers < 2:
            raise ValueError(f"the decoder needs at least 2 layers, not {layers}")
        self.skip = skip
        self.head = nn.Conv3d(1, features, 3, padding=1)
        self.body = nn.Sequential(*(ResidualBlock(features, residual_scale, dims=3) for _ in range(blocks)),
                                  nn.Conv3d(features, features, 3, padding=1))
        widths = [features + 6] + [hidden] * (layers - 1)
        decoder = []
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            decoder += [nn.Linear(width_in, width_out), nn.ReLU(inplace=True)]
        self.decoder = nn.Sequential(*decoder, nn.Linear(hidden, 1))
        if skip == "lanczos":
            nn.init.zeros_(self.decoder[-1].weight)
            nn.init.zeros_(self.decoder[-1].bias)

    def forward(self, x: torch.Tensor, coordinates: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        shallow = self.head(x)
        features = shallow + self.body(shallow)
        batch, channels = features.shape[:2]
        sizes = features.shape[2:]
        out_shape = coordinates.shape[2:]
        nearest, offsets = zip(*(nearest_voxel(coordinates[:, axis], sizes[axis]) for axis in range(3)))
        index = ((nearest[0] * sizes[1] + nearest[1]) * sizes[2] + nearest[2]).view(batch, 1, -1)
        offsets = torch.stack(offsets, 1).view(batch, 3, -1)
        flat_features = features.view(batch, channels, -1)
        decoded = []
        # The decoder runs on at most DECODER_CHUNK output voxels at a time, so its hidden activations take the same
        # memory at ×4 (64 output voxels per input voxel) as at ×1.1.
        for start in range(0, index.shape[2], DECODER_CHUNK):
            chunk = slice(start, start + DECODER_CHUNK)
            gathered = flat_features.gather(2, index[:, :, chunk].expand(-1, channels, -1))  # (B, C, n)
            inverse_scale = (1 / scale).view(batch, 3, 1).expand(-1, -1, gathered.shape[2])
            query = torch.cat([gathered, offsets[:, :, chunk], inverse_scale], dim=1)
            decoded.append(self.decoder(query.transpose(1, 2)))
        output = torch.cat(decoded, dim=1).view(batch, 1, *out_shape)
        if self.skip == "lanczos":
            output = output + lanczos_sample3d(x, coordinates)
        return output
