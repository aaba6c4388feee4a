"""Degradation operators that make low-resolution volumes from high-resolution ones, for training and evaluation.

All operators take numpy arrays in (k, j, i) order and factors per *array* axis. They use the corner-aligned grid of
``geometry``: low-resolution voxel ``m`` along an axis of factor ``f`` covers the high-resolution interval
``[m·f, (m+1)·f)`` (voxels ``m·f … (m+1)·f − 1`` for a whole ``f``), so its centre lies at high-resolution index
``(m + 0.5)·f − 0.5``. Random operators take a seed and are reproducible.
Results are float (float32 for float32 or integer input, float64 for float64 input); the input is never modified.
"""
from fractions import Fraction
from typing import Sequence, Tuple

import numpy as np
from scipy.special import erf

from MedSRLib.errors import InputError

PROFILES = ("box", "gaussian")
FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))
# The evaluation protocol crops to a multiple of each factor's numerator: its factors are simple fractions.
MAX_FACTOR_DENOMINATOR = 8


def _float_dtype(array: np.ndarray) -> np.dtype:
    return np.result_type(array.dtype, np.float32)


def _float(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    return array.astype(_float_dtype(array), copy=False)


def _integer_factors(array: np.ndarray, factors: Sequence[int]) -> Tuple[int, ...]:
    if array.ndim != len(factors):
        raise InputError(f"Got {len(factors)} factors for a {array.ndim}D array; give one factor per array axis.")
    if any(int(f) != f or f < 1 for f in factors):
        raise InputError(f"Factors {tuple(factors)} must be whole numbers of at least 1.")
    return tuple(int(f) for f in factors)


def _divisible_factors(array: np.ndarray, factors: Sequence[int]) -> Tuple[int, ...]:
    factors = _integer_factors(array, factors)
    if any(n % f for n, f in zip(array.shape, factors)):
        raise InputError(f"Shape {array.shape} is not a multiple of the factors {factors}; "
                         "crop it first with crop_to_multiple.")
    return factors


def crop_to_multiple(array: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Crop each axis from its end to the largest multiple of its factor (a view, not a copy)."""
    factors = _integer_factors(array, factors)
    if any(n < f for n, f in zip(array.shape, factors)):
        raise InputError(f"Shape {array.shape} is smaller than the factors {factors}.")
    return array[tuple(slice(0, n - n % f) for n, f in zip(array.shape, factors))]


def block_mean(array: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Area downsampling: the mean of each block of ``factors`` voxels; the shape must be a multiple of the factors."""
    factors = _divisible_factors(array, factors)
    blocks = []
    for n, f in zip(array.shape, factors):
        blocks += [n // f, f]
    return _float(array).reshape(blocks).mean(axis=tuple(range(1, 2 * array.ndim, 2)))


def factor_fraction(factor: float) -> Fraction:
    """A factor of at least 1 as a reduced fraction with a small denominator: 2 → 2/1, 2.5 → 5/2, 4/3 → 4/3."""
    value = float(factor)
    if np.isfinite(value) and value >= 1:
        fraction = Fraction(value).limit_denominator(MAX_FACTOR_DENOMINATOR)
        if abs(fraction - value) <= 1e-9 * value:
            return fraction
    raise InputError(f"Factor {factor} must be at least 1 and a fraction with a denominator of at most "
                     f"{MAX_FACTOR_DENOMINATOR}, like 2, 2.5 or 4/3.")


def area_average(array: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Exact area downsampling by any real factors ≥ 1 (2.5, 4/3, 2.37): along an axis of n voxels with factor s,
    output voxel m is the mean of the interval [m·s, (m+1)·s), each input voxel [j, j+1) weighted by its overlap with
    it — the box slice profile of width s of :func:`thicken_slices`, applied axis by axis.

    The output has floor(n / s) voxels per axis; input voxels beyond the last whole interval are dropped. With whole
    factors only this is :func:`block_mean` of the cropped array (bit for bit).
    """
    if array.ndim != len(factors):
        raise InputError(f"Got {len(factors)} factors for a {array.ndim}D array; give one factor per array axis.")
    if not all(np.isfinite(f) and f >= 1 for f in factors):
        raise InputError(f"Factors {tuple(factors)} must be at least 1.")
    if any(n < f for n, f in zip(array.shape, factors)):
        raise InputError(f"Shape {array.shape} is smaller than the factors {tuple(factors)}.")
    if all(float(f).is_integer() for f in factors):
        whole = tuple(int(f) for f in factors)
        return block_mean(crop_to_multiple(array, whole), whole)
    result = _float(array)
    for axis, factor in enumerate(factors):
        if factor != 1:
            result = thicken_slices(result, axis, float(factor), profile="box")
    return result


def downsample_nearest(array: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Pick the voxel at each block's centre; for an even factor, the later of the two central voxels."""
    factors = _divisible_factors(array, factors)
    return _float(array[tuple(slice(f // 2, None, f) for f in factors)]).copy()


def downsample_linear(array: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Linear interpolation at each block's centre: the central voxel (odd factor) or the mean of the two (even)."""
    factors = _divisible_factors(array, factors)
    result = _float(array)
    for axis, f in enumerate(factors):
        if f == 1:
            continue
        later = np.take(result, np.arange(f // 2, result.shape[axis], f), axis=axis)
        if f % 2:
            result = later
        else:
            earlier = np.take(result, np.arange(f // 2 - 1, result.shape[axis], f), axis=axis)
            result = (earlier + later) / 2
    return result if result is not array else result.copy()


def kspace_truncate(array: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """DCSRN-style degradation: keep the central round(n / f) frequencies per axis, return the real part on the same grid."""
    array = np.asarray(array)
    if array.ndim != len(factors) or min(factors) < 1:
        raise InputError(f"Give one factor of at least 1 per array axis, not {tuple(factors)}.")
    spectrum = np.fft.fftshift(np.fft.fftn(array))
    keep_window = []
    for n, f in zip(array.shape, factors):
        keep = max(1, int(round(n / f)))
        start = n // 2 - keep // 2
        keep_window.append(slice(start, start + keep))
    truncated = np.zeros_like(spectrum)
    truncated[tuple(keep_window)] = spectrum[tuple(keep_window)]
    return np.fft.ifftn(np.fft.ifftshift(truncated)).real.astype(_float_dtype(array))


def slice_weights(length: int, factor: float, profile: str = "box", gap: float = 0.0) -> np.ndarray:
    """The (LR slices × HR slices) matrix that ``thicken_slices`` applies along the thick axis; each row sums to 1.

    LR slice ``m`` is centred at HR index ``c = (m + 0.5)·factor − 0.5``; its profile is a box of width
    ``thickness = factor − gap`` or a Gaussian of that FWHM. HR voxel ``n`` gets the profile's integral over
    ``[n − 0.5, n + 0.5]``; rows are renormalised, so the Gaussian's tails beyond the volume are dropped.
    """
    if profile not in PROFILES:
        raise InputError(f"Unknown slice profile '{profile}'; choose one of {', '.join(PROFILES)}.")
    if not factor >= 1:
        raise InputError(f"Slice factor {factor} must be at least 1.")
    thickness = factor - gap
    if not thickness > 0:
        raise InputError(f"Gap {gap} leaves no slice thickness at factor {factor}; the gap must be below the factor.")
    count = int(np.floor(length / factor + 1e-9))
    if count < 1:
        raise InputError(f"{length} slices are fewer than the factor {factor}.")
    centres = (np.arange(count) + 0.5) * factor - 0.5
    edges = np.arange(length + 1) - 0.5
    offsets = edges[None, :] - centres[:, None]
    if profile == "box":
        cdf = np.clip(offsets / thickness + 0.5, 0, 1)
    else:
        sigma = thickness / FWHM_PER_SIGMA
        cdf = 0.5 * (1 + erf(offsets / (sigma * np.sqrt(2))))
    weights = np.diff(cdf, axis=1)
    return weights / weights.sum(axis=1, keepdims=True)


def thicken_slices(array: np.ndarray, axis: int, factor: float, profile: str = "box", gap: float = 0.0) -> np.ndarray:
    """Simulate a thick-slice acquisition along one array axis: blur with the slice profile, keep one sample per LR slice.

    ``factor`` is the LR slice spacing in HR voxels and may be fractional (both profiles). ``gap`` is the space between
    consecutive slices, in HR voxels: the slice thickness (box width or Gaussian FWHM) is ``factor − gap``; a negative
    gap gives overlapping slices. HR slices at the end that do not fill a whole LR slice are dropped, so the result has
    ``floor(n / factor)`` slices. With a box profile, no gap and a whole factor this is the mean of each run of slices.
    """
    array = np.asarray(array)
    if not -array.ndim <= axis < array.ndim:
        raise InputError(f"Axis {axis} does not exist in a {array.ndim}D array.")
    weights = slice_weights(array.shape[axis], factor, profile, gap).astype(_float_dtype(array))
    blurred = np.tensordot(weights, _float(array), axes=([1], [axis]))
    return np.moveaxis(blurred, 0, axis)


def add_gaussian_noise(array: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Add zero-mean Gaussian noise of standard deviation ``sigma`` (in the array's intensity units)."""
    image = _float(array)
    noise = np.random.default_rng(seed).normal(0.0, sigma, image.shape).astype(image.dtype)
    return image + noise


def add_rician_noise(array: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Magnitude-MRI noise: |array + n₁ + i·n₂| with n₁, n₂ independent Gaussians of standard deviation ``sigma``."""
    image = _float(array)
    real, imaginary = np.random.default_rng(seed).normal(0.0, sigma, (2,) + image.shape).astype(image.dtype)
    return np.hypot(image + real, imaginary)
