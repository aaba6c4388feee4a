"""Training pairs from high-resolution windows: the network input made by a MedSRLib degradation, and the target.

On the corner-aligned grid (MedSRLib.grid.geometry) low-resolution voxel m of an axis with factor f covers the HR
interval [m·f, (m+1)·f), so an input of n voxels is super-resolved to round(n·f) voxels that are exactly the first
round(n·f) HR voxels: that is the target. For whole factors that divide the window it is the whole window.
"""
import math
from typing import Sequence, Tuple

import numpy as np

from MedSRLib.errors import InputError
from MedSRLib.grid.degradation import (area_average, block_mean, downsample_linear, downsample_nearest,
                                      kspace_truncate)
from MedSRLib.grid.fourier import fourier_upsample
from MedSRLib.grid.spline import corner_aligned_resample

# LR voxels mirrored onto each side of a window before its Fourier interpolation, so that the periodic extension
# the FFT assumes does not ring at the window's borders (a whole scan's borders are background).
FOURIER_PADDING = 4


def fourier_of_block_mean(hr: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """The block mean of ``hr`` Fourier-interpolated back onto its grid (``block-mean-fourier``), float32."""
    lr = np.pad(block_mean(hr, factors), FOURIER_PADDING, mode="symmetric")
    upsampled = fourier_upsample(lr, factors)
    return np.ascontiguousarray(upsampled[tuple(slice(FOURIER_PADDING * f, FOURIER_PADDING * f + n)
                                                for f, n in zip(factors, hr.shape))])


LR_GRID_DEGRADATIONS = {"block-mean": block_mean, "linear": downsample_linear, "nearest": downsample_nearest}
# Float factors: the exact area average (any factor).
AREA = "area"
# The input stays on the HR grid (DCSRN): the central part of k-space (KSPACE, any factor), or the block mean
# Fourier-interpolated back onto the HR grid (BLOCK_MEAN_FOURIER: what DCSRN's inference feeds its network for a scan
# made by area averaging, as the evaluation protocol makes its LR; on the training split its input is 1.1 dB further
# from the HR image than the k-space truncation's).
KSPACE, BLOCK_MEAN_FOURIER = "kspace", "block-mean-fourier"
HR_GRID_DEGRADATIONS = (KSPACE, BLOCK_MEAN_FOURIER)
# The degradations that take whole factors dividing the window, by name.
WHOLE_FACTOR_DEGRADATIONS = {**LR_GRID_DEGRADATIONS, BLOCK_MEAN_FOURIER: fourier_of_block_mean}
DEGRADATION_NAMES = (*LR_GRID_DEGRADATIONS, AREA, *HR_GRID_DEGRADATIONS)


def bspline_upsample(array: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """The cubic B-spline of a 2D or 3D array on its corner-aligned output grid (round(n·f) voxels per axis)."""
    if array.ndim == 2:
        return bspline_upsample(array[None], (1.0, *factors))[0]
    return corner_aligned_resample(array, tuple(factors)[::-1], order=3)


def lr_length(size: int, factor: float) -> int:
    """How many whole LR voxels ``size`` HR voxels give at ``factor``."""
    return int(math.floor(size / factor + 1e-9))


def sr_length(size: int, factor: float) -> int:
    """How many output voxels an input of ``size`` voxels has at ``factor`` (``geometry.output_shape``'s rounding)."""
    return max(1, int(round(size * factor)))


def check_degradation(name: str, factors: Sequence[float], window: int) -> None:
    """InputError unless ``name`` can degrade windows of ``window`` voxels a side by ``factors``."""
    if name not in DEGRADATION_NAMES:
        raise InputError(f"Unknown training degradation '{name}'; choose one of {', '.join(DEGRADATION_NAMES)}.")
    if name not in WHOLE_FACTOR_DEGRADATIONS:
        if any(lr_length(window, factor) < 1 for factor in factors):
            raise InputError(f"The {window}-voxel window is smaller than the factors {tuple(factors)}.")
        return
    if any(factor != int(factor) or window % int(factor) for factor in factors):
        raise InputError(f"Degradation '{name}' needs whole factors that divide the {window}-voxel window, not "
                         f"{tuple(factors)}; use 'area' for float factors.")


def degrade(hr: np.ndarray, factors: Sequence[float], name: str) -> Tuple[np.ndarray, np.ndarray]:
    """(input, target) of one HR window degraded by ``factors`` (one per window axis) with degradation ``name``."""
    if name == KSPACE:
        return kspace_truncate(hr, factors).astype(np.float32), hr
    if name in WHOLE_FACTOR_DEGRADATIONS:
        return WHOLE_FACTOR_DEGRADATIONS[name](hr, tuple(int(f) for f in factors)), hr
    degraded = area_average(hr, factors)
    target = hr[tuple(slice(0, sr_length(n, f)) for n, f in zip(degraded.shape, factors))]
    return degraded, target


def add_input_noise(degraded: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of a random σ in [0, strength) on the network input (``data.augment.noise``), as float32."""
    if strength:
        degraded = degraded + rng.normal(0, rng.uniform(0, strength), degraded.shape).astype(np.float32)
    return degraded.astype(np.float32)
