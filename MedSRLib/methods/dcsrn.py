"""DCSRN (Chen et al. 2018): a densely connected 3D network that refines a volume already on the output grid.

The input is first Fourier-interpolated (zero-padded in k-space) onto the corner-aligned output grid that MedSR uses
everywhere: output voxel o sits at input index (o + 0.5) / f − 0.5, which is a phase shift of 0.5 / f − 0.5 input
voxels before padding. For a real low-resolution MR volume, the central part of k-space sampled on a coarser grid,
that gives back the k-space-truncated image DCSRN's paper trains on; MedSR's models are trained on what it gives for an
area-averaged volume, as the evaluation protocol makes its LR (``block-mean-fourier`` in Training/configs/dcsrn-x2.yaml,
which says why). The network then runs tiled at factor 1, so patch and stride are in output voxels. Trained as mDCSRN:
L1 pre-training (``Training/configs/dcsrn-psnr-x2-cpu.yaml``), then WGAN-GP from that model (``dcsrn-x2-cpu.yaml``).
"""
from typing import Tuple

import numpy as np

from MedSRLib.grid.fourier import fourier_upsample
from MedSRLib.grid.geometry import array_factors
from .base import RunSettings, register
from .network import PatchNetworkMethod


@register
class DCSRN(PatchNetworkMethod):
    name = "dcsrn"
    description = ("DCSRN: densely connected 3D network on the output grid after Fourier interpolation, L1 pre-training "
                   "then WGAN-GP; 3D ×2 isotropic.")
    scales = ((2.0, 2.0, 2.0),)
    default_patch = (64, 64, 64)
    activation_factor = 400.0

    def network_input(self, image: np.ndarray, scale_xyz, settings: RunSettings) -> Tuple[np.ndarray, Tuple[int, ...]]:
        factors = tuple(int(round(f)) for f in array_factors(scale_xyz))
        # complex64 working copy (8 bytes) and the float32 result (4 bytes) per output voxel.
        settings.require_memory(12 * image.size * np.prod(factors), "Fourier interpolation onto the output grid")
        return fourier_upsample(image, factors), (1, 1, 1)
