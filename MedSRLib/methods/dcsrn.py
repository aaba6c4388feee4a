"""DCSRN (Chen et al. 2018): a densely connected 3D network that refines a volume already on the output grid.

DCSRN is trained on k-space-truncated HR patches: the central 1/scale of k-space kept, the image left on the HR grid.
A real low-resolution MR volume is exactly such a central part of k-space, sampled on a coarser grid, so at inference
the input is first Fourier-interpolated (zero-padded in k-space) onto the corner-aligned output grid that MedSR uses
everywhere: output voxel o sits at input index (o + 0.5) / f − 0.5, which is a phase shift of 0.5 / f − 0.5 input
voxels before padding. The network then runs tiled at factor 1. Patch and stride are therefore in output voxels.
"""
from typing import Sequence, Tuple

import numpy as np

from MedSRLib.grid.geometry import array_factors
from .base import RunSettings, register
from .network import NetworkMethod


def fourier_upsample(image: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Band-limited (k-space zero-padding) interpolation of ``image`` by whole ``factors`` per array axis onto the
    corner-aligned grid; float32. An even-length axis's Nyquist coefficient is split between ±Nyquist so the
    result is real."""
    result = np.asarray(image, dtype=np.complex64)
    for axis, factor in enumerate(int(f) for f in factors):
        if factor == 1:
            continue
        length = result.shape[axis]
        spectrum = np.moveaxis(np.fft.fft(result, axis=axis), axis, 0)
        frequencies = np.fft.fftfreq(length, d=1.0 / length)  # integers; the Nyquist one (even length) is −length/2
        shift = 0.5 / factor - 0.5
        spectrum = spectrum * np.exp(2j * np.pi * frequencies * shift / length).reshape(-1, 1, 1).astype(np.complex64)
        padded = np.zeros((length * factor,) + spectrum.shape[1:], dtype=np.complex64)
        positive = (length + 1) // 2  # frequencies 0 … ceil(length / 2) − 1
        padded[:positive] = spectrum[:positive]
        negative = length // 2        # frequencies −floor(length / 2) … −1
        padded[-negative:] = spectrum[-negative:]
        if length % 2 == 0:
            nyquist = np.fft.fft(np.moveaxis(result, axis, 0), axis=0)[length // 2]
            padded[-negative] = 0.5 * nyquist * np.exp(-1j * np.pi * shift)
            padded[length // 2] = 0.5 * nyquist * np.exp(1j * np.pi * shift)
        result = np.moveaxis(np.fft.ifft(padded, axis=0) * factor, 0, axis)
    return np.ascontiguousarray(result.real, dtype=np.float32)


@register
class DCSRN(NetworkMethod):
    name = "dcsrn"
    description = ("DCSRN: densely connected 3D network on the output grid after Fourier interpolation, trained with "
                   "WGAN-GP on k-space-truncated input; 3D ×2 isotropic.")
    scales = ((2.0, 2.0, 2.0),)
    default_patch = (64, 64, 64)
    activation_factor = 400.0

    def network_input(self, image: np.ndarray, scale_xyz, settings: RunSettings) -> Tuple[np.ndarray, Tuple[int, ...]]:
        factors = tuple(int(round(f)) for f in array_factors(scale_xyz))
        # complex64 working copy (8 bytes) and the float32 result (4 bytes) per output voxel.
        settings.require_memory(12 * image.size * np.prod(factors), "Fourier interpolation onto the output grid")
        return fourier_upsample(image, factors), (1, 1, 1)
