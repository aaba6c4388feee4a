"""Nearest, linear and cubic B-spline interpolation onto the corner-aligned output grid (``grid.spline``); borders
mirror about the volume's outer face, like ``scipy.ndimage.zoom(grid_mode=True)``, which made the reference table."""
import numpy as np

from MedSRLib.grid.spline import corner_aligned_resample
from .base import RunSettings, register
from .interpolation import InterpolationMethod


class SplineInterpolation(InterpolationMethod):
    order = 1

    def working_bytes(self, image, shape_out):
        # float32 output, plus scipy's float64 copy of the spline-filtered input for order > 1.
        return 4 * np.prod(shape_out, dtype=float) + (8 * image.size if self.order > 1 else 0)

    def resample(self, image, scale_xyz, settings: RunSettings):
        return corner_aligned_resample(image, scale_xyz, self.order)


@register
class NearestInterpolation(SplineInterpolation):
    name = "nearest"
    order = 0
    description = "Nearest-neighbour interpolation: shows the input's real resolution; any modality, any scale."


@register
class LinearInterpolation(SplineInterpolation):
    name = "linear"
    order = 1
    description = "Trilinear interpolation baseline; any modality, any scale."


@register
class BSplineInterpolation(SplineInterpolation):
    name = "bspline"
    order = 3
    description = "Cubic B-spline interpolation, the baseline every learned method must beat; any modality, any scale."
