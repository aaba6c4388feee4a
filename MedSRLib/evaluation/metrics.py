"""Image quality metrics: full-reference (PSNR, SSIM, NRMSE) and no-reference (edge sharpness, PIQE).

Full-reference metrics compare a super-resolved array with the reference on the same grid, both (k, j, i) and, for the
evaluation protocol, normalised to [0, 1] (data range 1). A mask restricts a metric to the voxels where it is True.
"""
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage
from scipy.signal import savgol_filter
from skimage.metrics import structural_similarity

from MedSRLib.errors import InputError, MedSRError
from MedSRLib.grid.intensity import Normaliser

# The protocol's foreground: reference intensity above this (after normalisation to [0, 1]).
FOREGROUND_THRESHOLD = 0.1
SSIM_WINDOW = 7


def _pair(sr, ref, mask=None):
    sr, ref = np.asarray(sr, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if sr.shape != ref.shape:
        raise InputError(f"The super-resolved array has shape {sr.shape} but the reference has {ref.shape}; "
                         "they must be on the same grid.")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != ref.shape:
            raise InputError(f"The mask has shape {mask.shape}, not the reference's {ref.shape}.")
        if not mask.any():
            raise InputError("The mask is empty; a metric needs at least one voxel inside it.")
    return sr, ref, mask


def psnr(sr, ref, data_range: float = 1.0, mask=None) -> float:
    """Peak signal-to-noise ratio in dB: 10·log10(data_range² / MSE); infinite for identical arrays."""
    sr, ref, mask = _pair(sr, ref, mask)
    squared_error = (sr - ref) ** 2
    mse = squared_error[mask].mean() if mask is not None else squared_error.mean()
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def _inside_window_border(ndim: int):
    """The slices that leave out the half-window border where the SSIM window does not fit."""
    return (slice(SSIM_WINDOW // 2, -(SSIM_WINDOW // 2)),) * ndim


def ssim(sr, ref, data_range: float = 1.0, mask=None) -> float:
    """SSIM over the whole array (3D for a volume; skimage's 7-voxel uniform window).

    Like skimage, the mean leaves out the half-window border where the window does not fit; with a mask, the SSIM map
    is averaged over the mask's voxels inside that border.
    """
    sr, ref, mask = _pair(sr, ref, mask)
    if min(ref.shape) < SSIM_WINDOW:
        raise InputError(f"SSIM needs at least {SSIM_WINDOW} voxels along every axis, not shape {ref.shape}.")
    if mask is None:
        return float(structural_similarity(sr, ref, data_range=data_range, win_size=SSIM_WINDOW))
    _, ssim_map = structural_similarity(sr, ref, data_range=data_range, win_size=SSIM_WINDOW, full=True)
    inner = _inside_window_border(ref.ndim)
    inside = mask[inner]
    if not inside.any():
        raise InputError("The mask lies entirely within the SSIM window's border; use a larger mask.")
    return float(ssim_map[inner][inside].mean())


def ssim_slicewise(sr, ref, axis: int, data_range: float = 1.0, mask=None) -> float:
    """Mean 2D SSIM over the slices perpendicular to array ``axis`` (those with mask voxels inside, when masked)."""
    sr, ref, mask = _pair(sr, ref, mask)
    scores = []
    for index in range(ref.shape[axis]):
        plane = mask.take(index, axis) if mask is not None else None
        if plane is not None and not plane[_inside_window_border(2)].any():
            continue
        scores.append(ssim(sr.take(index, axis), ref.take(index, axis), data_range, plane))
    if not scores:
        raise InputError("No slice has mask voxels away from its border; use a larger mask.")
    return float(np.mean(scores))


def nrmse(sr, ref, mask=None) -> float:
    """Root-mean-square error over the root-mean-square of the reference (skimage's 'euclidean' normalisation)."""
    sr, ref, mask = _pair(sr, ref, mask)
    if mask is not None:
        sr, ref = sr[mask], ref[mask]
    reference_norm = np.sqrt(np.mean(ref ** 2))
    if reference_norm == 0:
        raise InputError("The reference is zero everywhere (inside the mask), so NRMSE is undefined.")
    return float(np.sqrt(np.mean((sr - ref) ** 2)) / reference_norm)


def compare(sr, ref, mask=None) -> dict:
    """The protocol's numbers for arrays in [0, 1]: PSNR, PSNR in the foreground (ref > 0.1), SSIM, NRMSE."""
    foreground = np.asarray(ref) > FOREGROUND_THRESHOLD
    if mask is not None:
        foreground &= np.asarray(mask, dtype=bool)
    return {"psnr": psnr(sr, ref, 1.0, mask), "psnr_foreground": psnr(sr, ref, 1.0, foreground),
            "ssim": ssim(sr, ref, 1.0, mask), "nrmse": nrmse(sr, ref, mask)}


# ---------------------------------------------------------------------------------------------------------------------
# No-reference metrics


def _normalised(volume_array) -> np.ndarray:
    array = np.asarray(volume_array, dtype=np.float32)
    if array.ndim != 3:
        raise InputError(f"No-reference metrics need a 3D array, not shape {array.shape}.")
    return Normaliser.fit(array, clip=True).forward(array)


def find_edge_points(volume_array, spacing: Sequence[float], axis: Optional[int] = None, top_fraction: float = 0.02,
                     max_points: int = 2000, seed: int = 0) -> np.ndarray:
    """Voxel indices (N × 3, k, j, i) of strong borders: the ``top_fraction`` largest gradient magnitudes of the
    [0, 1]-normalised volume (with ``axis``: among voxels whose gradient is within about 25° of that array axis); a seeded
    random subset of at most ``max_points``. Pass them to :func:`edge_sharpness` to measure several volumes at the same
    borders (e.g. found on the reference)."""
    return _strong_edges(_gradient(_normalised(volume_array), spacing), axis, top_fraction, max_points, seed)


def _strong_edges(gradient, axis, top_fraction=0.02, max_points=2000, seed=0, min_cosine=0.9) -> np.ndarray:
    magnitude = np.sqrt(sum(component ** 2 for component in gradient))
    candidates = magnitude > 0
    if axis is not None:
        candidates &= np.abs(gradient[axis]) >= min_cosine * magnitude
    if not candidates.any():
        return np.zeros((0, 3), dtype=int)
    candidates &= magnitude >= np.quantile(magnitude[candidates], 1 - top_fraction)
    points = np.argwhere(candidates)
    if len(points) > max_points:
        points = points[np.sort(np.random.default_rng(seed).choice(len(points), max_points, replace=False))]
    return points


def _gradient(array: np.ndarray, spacing: Sequence[float]):
    """Gradient per array axis in intensity per mm, after a light (0.5 voxel) Gaussian smoothing against noise."""
    smoothed = ndimage.gaussian_filter(array, 0.5)
    return np.gradient(smoothed, *[float(s) for s in spacing[::-1]])


def edge_sharpness(volume_array, spacing: Sequence[float], axis: Optional[int] = None, points: Optional[np.ndarray] = None,
                   half_length_voxels: float = 4.0, min_contrast: float = 0.2, seed: int = 0) -> float:
    """Edge sharpness in mm⁻¹ (CLADE / METHODS.md §5): the median, over strong borders, of the largest slope of the
    border's intensity profile normalised to [0, 1] and smoothed by a Savitzky–Golay filter.

    Automatic version: the volume is normalised to [0, 1] (0.5 / 99.5 percentiles); borders come from
    :func:`find_edge_points` (or ``points``); each profile runs ±``half_length_voxels`` voxel steps through the border
    along the local gradient direction (so thick voxels get long enough profiles), in 8 samples per voxel step by linear
    interpolation. Profiles whose contrast is below ``min_contrast`` (noise, not a border) are dropped. ``spacing`` is
    (x, y, z) in mm like a Volume's; with ``axis`` only borders crossed along that array axis count (e.g. the
    through-plane axis). A ramp edge of width w mm scores 1/w; a Gaussian-blurred step of σ mm scores 0.40/σ for σ of
    two voxels or more (about 0.35/σ at one voxel, where sampling blurs the edge further).
    """
    array = _normalised(volume_array)
    spacing_kji = np.asarray([float(s) for s in spacing[::-1]])
    gradient = _gradient(array, spacing)
    if points is None:
        points = _strong_edges(gradient, axis, seed=seed)
    points = np.asarray(points, dtype=int).reshape(-1, 3)
    directions = np.stack([component[tuple(points.T)] for component in gradient], axis=1)
    lengths = np.linalg.norm(directions, axis=1)
    points, directions = points[lengths > 0], directions[lengths > 0] / lengths[lengths > 0, None]
    # A unit physical direction u crosses one voxel every 1 / |u / spacing| mm.
    voxel_step_mm = 1 / np.linalg.norm(directions / spacing_kji, axis=1)
    samples_per_voxel = 8
    offsets = np.arange(-half_length_voxels * samples_per_voxel, half_length_voxels * samples_per_voxel + 1) / samples_per_voxel
    offsets_mm = offsets[None, :] * voxel_step_mm[:, None]
    positions = points[:, None, :] + offsets_mm[:, :, None] * directions[:, None, :] / spacing_kji
    profiles = ndimage.map_coordinates(array, positions.reshape(-1, 3).T, order=1, mode="nearest")
    profiles = profiles.reshape(offsets_mm.shape)
    contrast = profiles.max(axis=1) - profiles.min(axis=1)
    keep = contrast >= min_contrast
    if not keep.any():
        raise InputError("The volume has no border with enough contrast to measure edge sharpness.")
    normalised = (profiles[keep] - profiles[keep].min(axis=1, keepdims=True)) / contrast[keep, None]
    # Savitzky–Golay over 13 samples (1.5 voxel steps): the slope per sample, then per mm.
    slopes = savgol_filter(normalised, window_length=13, polyorder=2, deriv=1, axis=1)
    slopes_per_mm = np.abs(slopes).max(axis=1) * samples_per_voxel / voxel_step_mm[keep]
    return float(np.median(slopes_per_mm))


def piqe_slicewise(volume_array, axis: int, min_foreground: float = 0.1) -> float:
    """Mean PIQE score (0 best … 100 worst) over the slices perpendicular to array ``axis`` whose foreground
    (normalised intensity above 0.1) covers at least ``min_foreground`` of the slice; slices must be at least 16×16."""
    try:
        from pypiqe import piqe  # imports OpenCV: load it only when PIQE is asked for
    except ImportError:
        raise MedSRError('PIQE needs the pypiqe package, which is not installed: pip install "medsr[metrics]".') \
            from None

    array = _normalised(volume_array)
    scores = []
    for index in range(array.shape[axis]):
        plane = array.take(index, axis)
        if min(plane.shape) < 16:
            raise InputError(f"PIQE needs slices of at least 16×16 voxels, not {plane.shape}.")
        if np.mean(plane > FOREGROUND_THRESHOLD) >= min_foreground:
            scores.append(piqe(plane.astype(np.float64))[0])
    if not scores:
        raise InputError("No slice has enough foreground for PIQE; lower min_foreground.")
    return float(np.mean(scores))
