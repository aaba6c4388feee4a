"""Estimate the through-plane slice profile of a thick-slice scan from the scan itself (pure numpy / scipy).

The idea (as ESPRESO / ECLARE, but with spectra instead of a network): blur and sample one in-plane axis of the scan
with a candidate profile (``degradation.thicken_slices``). When the candidate equals the scanner's profile, each
plane spanned by the thick axis and that in-plane axis has been blurred and sampled the same way along both of its
axes, so for an object without a preferred direction its power spectrum along the thick axis equals the one along the
in-plane axis. The estimate is the profile width whose two spectra agree best, compared in log power over the upper
half of the band (below it the spectra describe the anatomy's extent, not the profile). Blurring the in-plane axis of
the scan itself, rather than comparing it with the raw in-plane spectrum, matters: the in-plane slices are already
blurred by the thick profile, which lowers their fine in-plane detail too.

Measured on Colin27 (README, SMORE section): with the right shape the full width at half maximum comes within 7 % of
the truth. The *shape* is not identifiable this way: at a slice spacing close to the thickness, a box of width w and
a Gaussian of FWHM ≈ 0.7·w have nearly the same spectrum below the sampling rate, so the shape is an input (Gaussian by
default) and the width is what is estimated; either fit degrades training data almost identically.

Widths and gaps are in in-plane voxels, like ``thicken_slices``: the slice spacing is ``factor`` voxels and
``gap = factor − fwhm`` (negative: overlapping slices).
"""
from dataclasses import dataclass

import numpy as np
from scipy import optimize, signal

from MedSRLib.errors import InputError
from .degradation import PROFILES, thicken_slices

# Welch segments of at most this many samples along each compared line; at least MIN_SAMPLES samples are needed.
SEGMENT = 16
MIN_SAMPLES = 3  # the fewest SMORE accepts along an in-plane side (per_scan.plan)
# Spectra are compared from this fraction of the sampling band's top (Nyquist) upwards.
LOWEST_COMPARED_FREQUENCY = 0.5
# Lines of the other in-plane axis kept per compared plane: bounds the work on large scans.
MAX_LINES = 128
# Candidate widths, as multiples of the slice spacing.
WIDTH_BOUNDS = (0.125, 2.0)


@dataclass(frozen=True)
class SliceProfileEstimate:
    """A profile of ``shape`` and full width at half maximum ``fwhm``, for slices ``factor`` apart (in-plane voxels);
    ``mismatch``: the mean squared log-power difference left between the thick-axis and in-plane spectra."""
    shape: str
    fwhm: float
    factor: float
    mismatch: float

    @property
    def gap(self) -> float:
        return self.factor - self.fwhm


def estimate_slice_profile(array: np.ndarray, thick_axis: int, factor: float,
                           shape: str = "gaussian") -> SliceProfileEstimate:
    """The width of the ``shape`` profile ("box" or "gaussian") that best explains the thick axis of ``array``,
    whose slices are ``factor`` in-plane voxels apart. The input is not modified."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise InputError(f"Slice-profile estimation needs a 3D volume, not shape {array.shape}.")
    if not -3 <= thick_axis < 3:
        raise InputError(f"Axis {thick_axis} does not exist in a 3D volume.")
    if shape not in PROFILES:
        raise InputError(f"Unknown slice profile '{shape}'; choose one of {', '.join(PROFILES)}.")
    if not factor > 1:
        raise InputError(f"The slice spacing must be above 1 in-plane voxel to estimate a slice profile, not {factor}.")
    volume = np.moveaxis(array, thick_axis, 0)
    shortest = min(volume.shape[0], int(min(volume.shape[1:]) // factor))
    if shortest < MIN_SAMPLES:
        raise InputError(f"A volume of shape {array.shape} with slices {factor:g} voxels apart is too small to estimate "
                         f"its slice profile: it needs at least {MIN_SAMPLES} slices and in-plane sides of "
                         f"{int(np.ceil(MIN_SAMPLES * factor))} voxels.")
    if not np.ptp(volume) > 0:
        raise InputError("A constant volume has no structure to estimate a slice profile from.")
    planes = [_plane_stack(volume, in_plane_axis) for in_plane_axis in (1, 2)]
    segment = min(SEGMENT, shortest)

    def mismatch(width: float) -> float:
        differences = [_log_spectrum(blurred, 0, segment) - _log_spectrum(blurred, 1, segment)
                       for blurred in (thicken_slices(plane, 1, factor, shape, factor - width) for plane in planes)]
        return float(np.mean(np.mean(differences, axis=0) ** 2))

    bounds = (WIDTH_BOUNDS[0] * factor, WIDTH_BOUNDS[1] * factor)
    best = optimize.minimize_scalar(mismatch, bounds=bounds, method="bounded", options={"xatol": 0.005 * factor})
    return SliceProfileEstimate(shape, float(best.x), float(factor), float(best.fun))


def _plane_stack(volume: np.ndarray, in_plane_axis: int) -> np.ndarray:
    """(thick axis, ``in_plane_axis``, other in-plane axis) planes, float32, at most MAX_LINES of the other axis."""
    planes = np.moveaxis(volume, in_plane_axis, 1)
    step = int(np.ceil(planes.shape[2] / MAX_LINES))
    return np.asarray(planes[:, :, ::step], dtype=np.float32)


def _log_spectrum(stack: np.ndarray, axis: int, segment: int) -> np.ndarray:
    """The log of the mean power spectrum along ``axis`` of every line of ``stack``, upper part of the band only."""
    frequencies, power = signal.welch(stack, nperseg=segment, axis=axis, detrend="constant", window="hann")
    other_axes = tuple(a for a in range(stack.ndim) if a != axis)
    mean_power = power.mean(axis=other_axes)[frequencies >= LOWEST_COMPARED_FREQUENCY * frequencies[-1]]
    return np.log(np.maximum(mean_power, np.finfo(np.float32).tiny))
