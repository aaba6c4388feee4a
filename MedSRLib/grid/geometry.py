"""The output grid of a super-resolution, and the thick axis of an anisotropic scan.

Conventions (shared by every method, the CLI and the Slicer adapter):

* A scale is given per physical axis in (x, y, z) = (i, j, k) order, like spacing; arrays are (k, j, i), so the factor
  of array axis ``a`` is ``scale[2 - a]``.
* Output spacing = spacing / f, size = round(size · f), and the grid is *corner aligned*: the outer corner of the first
  voxel stays where it was, so the origin (centre of the first voxel) moves by D · (s' − s) / 2. Direction is unchanged.
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from MedSRLib.errors import InputError

# The largest factor when several axes are scaled, and when only one (thick-slice) axis is: clinical 5–7 mm slices over
# 0.5–0.8 mm in-plane voxels need factors of 8–13 to restore the in-plane spacing.
MAX_SCALE = 8.0
MAX_THROUGH_PLANE_SCALE = 16.0
# Spacing ratios below this count as isotropic.
ANISOTROPY_THRESHOLD = 1.2

ScaleLike = Union[float, int, str, Sequence[float]]


def parse_scale(scale: ScaleLike) -> Tuple[float, float, float]:
    """One factor per (x, y, z) axis from a number, "2", "1,1,3" or a sequence; raise InputError when out of range."""
    if isinstance(scale, str):
        try:
            values = [float(part) for part in scale.replace("x", ",").split(",") if part.strip()]
        except ValueError:
            raise InputError(f"Scale '{scale}' is not a number or a comma-separated triple like 1,1,3.") from None
    elif np.isscalar(scale):
        values = [float(scale)]
    else:
        values = [float(v) for v in scale]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise InputError(f"Scale {scale!r} must be one number or three (x, y, z).")
    if not all(np.isfinite(values)) or min(values) < 1 or max(values) <= 1:
        raise InputError(f"Scale {tuple(values)} must be at least 1 on every axis and above 1 on one; "
                         "MedSR only increases resolution.")
    scaled_axes = sum(value > 1 for value in values)
    limit = MAX_THROUGH_PLANE_SCALE if scaled_axes == 1 else MAX_SCALE
    if max(values) > limit:
        raise InputError(f"Scale {max(values):g} is above {limit:g} (the limit is {MAX_THROUGH_PLANE_SCALE:g} when only "
                         f"one axis is scaled, {MAX_SCALE:g} otherwise); such factors invent detail rather than recover "
                         "it.")
    return tuple(values)


def target_spacing_scale(spacing_xyz: Sequence[float], target_mm: float) -> Tuple[float, float, float]:
    """The (x, y, z) scale that brings every axis coarser than ``target_mm`` to that spacing, leaving finer axes as they
    are: (0.8, 0.8, 7.2) mm to 1.2 mm is (1, 1, 6)."""
    if not np.isfinite(target_mm) or target_mm <= 0:
        raise InputError(f"The target spacing must be a positive number of mm, not {target_mm!r}.")
    spacing = np.asarray(spacing_xyz, dtype=float)
    if spacing.max() <= target_mm:
        raise InputError(f"Every axis of this volume (spacing {format_scale(tuple(round(s, 3) for s in spacing))} mm) "
                         f"is already at or finer than the target spacing {target_mm:g} mm.")
    return tuple(float(max(1.0, s / target_mm)) for s in spacing)


def format_scale(scale_xyz: Sequence[float]) -> str:
    """"2×2×2", "1×1×3": how scales appear in messages and listings."""
    return "×".join(f"{v:g}" for v in scale_xyz)


def array_factors(scale_xyz: Sequence[float]) -> Tuple[float, float, float]:
    """The per-array-axis (k, j, i) factors of an (x, y, z) scale."""
    return tuple(float(v) for v in scale_xyz[::-1])


@dataclass(frozen=True)
class Grid:
    size: Tuple[int, int, int]          # (x, y, z) voxels
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]

    @property
    def shape(self) -> Tuple[int, int, int]:
        """The (k, j, i) array shape of this grid."""
        return tuple(self.size[::-1])


def output_grid(size_xyz, spacing, origin, direction, scale_xyz) -> Grid:
    """The corner-aligned super-resolved grid of an input grid and an (x, y, z) scale."""
    scale = np.asarray(scale_xyz, dtype=float)
    spacing = np.asarray(spacing, dtype=float)
    new_spacing = spacing / scale
    new_size = np.maximum(1, np.round(np.asarray(size_xyz) * scale)).astype(int)
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    new_origin = np.asarray(origin, dtype=float) + matrix @ ((new_spacing - spacing) / 2)
    return Grid(tuple(int(n) for n in new_size), tuple(new_spacing.tolist()), tuple(new_origin.tolist()),
                tuple(float(v) for v in matrix.ravel()))


def output_shape(shape_kji, scale_xyz) -> Tuple[int, int, int]:
    """round(shape · f) per array axis."""
    return tuple(max(1, int(round(n * f))) for n, f in zip(shape_kji, array_factors(scale_xyz)))


def output_positions(length_out: int, factor: float, first: int = 0) -> np.ndarray:
    """Where output voxels ``first … first + length_out − 1`` of an axis scaled by ``factor`` sit on the input axis, in
    input voxel indices (input voxel centres are the integers): ``(o + 0.5) / factor − 0.5``, the corner-aligned grid.
    Arbitrary-scale networks receive these positions; spline and Lanczos resampling sample there."""
    return (np.arange(first, first + length_out, dtype=np.float64) + 0.5) / float(factor) - 0.5


def output_coordinates(lengths: Sequence[int], factors: Sequence[float],
                       firsts: Optional[Sequence[int]] = None) -> np.ndarray:
    """(ndim, *lengths): for every voxel of an output block (starting at output voxels ``firsts``, default 0) its
    position along each axis in input voxel indices (:func:`output_positions` per axis, on a grid). What a
    coordinate-conditioned network receives, in training and in the tiling engine."""
    firsts = firsts if firsts is not None else [0] * len(lengths)
    positions = [output_positions(n, f, first) for n, f, first in zip(lengths, factors, firsts)]
    return np.stack(np.meshgrid(*positions, indexing="ij"))


@dataclass(frozen=True)
class ThickAxis:
    axis: int        # physical axis: 0 = x (i), 1 = y (j), 2 = z (k)
    factor: float    # thick spacing / in-plane spacing

    @property
    def array_axis(self) -> int:
        return 2 - self.axis

    def scale(self) -> Tuple[float, float, float]:
        """The (x, y, z) scale that makes the volume isotropic."""
        values = [1.0, 1.0, 1.0]
        values[self.axis] = self.factor
        return tuple(values)


def detect_thick_axis(spacing: Sequence[float], threshold: float = ANISOTROPY_THRESHOLD) -> Optional[ThickAxis]:
    """The through-plane axis and its factor from spacing, or None for a (nearly) isotropic volume.

    The thick axis is the one with the largest spacing; its factor is that spacing over the finest in-plane spacing.
    """
    spacing = np.asarray(spacing, dtype=float)
    axis = int(np.argmax(spacing))
    in_plane = np.delete(spacing, axis)
    factor = float(spacing[axis] / in_plane.min())
    if factor < threshold:
        return None
    return ThickAxis(axis, round(factor, 4))
