"""Fixed (not learned) Lanczos-3 upsampling by integer factors, as a network layer for global interpolation skips.

It computes exactly what the ``lanczos`` method computes on MedSR's corner-aligned grid: output voxel ``n·f + p`` sits
at input position ``n + (p + 0.5)/f − 0.5``, and indices beyond the window mirror about its outer face. Each axis is a
1D convolution with one output channel per phase ``p`` whose outputs are then interleaved.
"""
import numpy as np
import torch
from torch.nn import functional

from MedSRLib.grid.lanczos import LOBES, lanczos_taps, mirror_index
from .pixel_shuffle import Scale3d, scale_triple


def _phase_kernels(factor: int, lobes: int) -> torch.Tensor:
    """(factor, 1, 2·lobes + 1) kernels over input offsets −lobes … +lobes, one per output phase."""
    offsets = (np.arange(factor) + 0.5) / factor - 0.5
    taps, weights = lanczos_taps(offsets, lobes)
    kernels = np.zeros((factor, 2 * lobes + 1))
    for phase in range(factor):
        kernels[phase, taps[phase] + lobes] = weights[phase]
    # conv1d correlates: output[n] = Σ_t kernel[t] · input[n + t − lobes].
    return torch.from_numpy(kernels[:, None, :]).float()


def _mirror_pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """Pad the last axis by ``width`` voxels reflected about the outer faces (−1 → 0), as the lanczos method does."""
    length = x.shape[-1]
    index = mirror_index(np.arange(-width, length + width), length)
    return x[..., torch.from_numpy(index).to(x.device)]


class LanczosUpsample3d(torch.nn.Module):
    """(B, C, D, H, W) → (B, C, rd·D, rh·H, rw·W) by separable Lanczos-3 interpolation."""

    def __init__(self, scale: Scale3d, lobes: int = LOBES):
        super().__init__()
        self.factors = scale_triple(scale)
        self.lobes = lobes
        for axis, factor in enumerate(self.factors):
            self.register_buffer(f"kernels{axis}", _phase_kernels(factor, lobes), persistent=False)

    def _upsample_last_axis(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        factor = kernels.shape[0]
        if factor == 1:
            return x
        leading, length = x.shape[:-1], x.shape[-1]
        rows = _mirror_pad(x.reshape(-1, 1, length), self.lobes)
        phases = functional.conv1d(rows, kernels.to(x.dtype))  # (N, factor, length)
        return phases.transpose(1, 2).reshape(*leading, length * factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis in range(3):
            dim = 2 + axis
            x = self._upsample_last_axis(x.transpose(dim, -1), getattr(self, f"kernels{axis}")).transpose(dim, -1)
        return x.contiguous()


def _mirror_index_tensor(index: torch.Tensor, length: int) -> torch.Tensor:
    """``mirror_index`` on a tensor, so the sampling below stays on the network's device."""
    period = 2 * length
    index = torch.remainder(index, period)
    return torch.where(index >= length, period - 1 - index, index)


def lanczos_matrix(positions: torch.Tensor, length: int, lobes: int = LOBES) -> torch.Tensor:
    """(B, n) fractional input positions along one axis of ``length`` voxels → (B, n, length) Lanczos-3 weights: the
    same taps, normalisation and mirrored edges as :func:`MedSRLib.grid.lanczos.lanczos_taps`."""
    taps = torch.floor(positions)[..., None] - lobes + 1 + torch.arange(2 * lobes, device=positions.device)
    distance = positions[..., None] - taps
    kernel = torch.sinc(distance) * torch.sinc(distance / lobes)
    kernel = kernel / kernel.sum(dim=-1, keepdim=True)
    weights = torch.zeros(*positions.shape, length, dtype=positions.dtype, device=positions.device)
    return weights.scatter_add_(-1, _mirror_index_tensor(taps.long(), length), kernel)


def lanczos_sample3d(x: torch.Tensor, coordinates: torch.Tensor, lobes: int = LOBES) -> torch.Tensor:
    """``x`` (B, C, D, H, W) at ``coordinates`` (B, 3, d, h, w), input voxel indices on a grid (each axis's
    coordinate depends on that axis's output index only, as ``geometry.output_coordinates`` makes them) → (B, C, d, h, w)
    by separable Lanczos-3 interpolation: any float factor per axis, equal to the ``lanczos`` method at its positions."""
    along = [coordinates[:, 0, :, 0, 0], coordinates[:, 1, 0, :, 0], coordinates[:, 2, 0, 0, :]]
    matrices = [lanczos_matrix(positions.to(x.dtype), x.shape[2 + axis], lobes) for axis, positions in
                enumerate(along)]
    x = torch.einsum("bkd,bcdhw->bckhw", matrices[0], x)
    x = torch.einsum("bkh,bcdhw->bcdkw", matrices[1], x)
    return torch.einsum("bkw,bcdhw->bcdhk", matrices[2], x)
