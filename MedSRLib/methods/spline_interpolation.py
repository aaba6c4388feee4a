"""Nearest, linear and cubic B-spline interpolation onto the corner-aligned output grid.

Output voxel ``o`` along an axis with factor ``f`` sits at input index ``(o + 0.5) / f - 0.5`` (the grid of
``geometry.output_grid``, which networks use too, so difference images line up). Borders mirror about the volume's
outer face (scipy's "grid-mirror"), like ``scipy.ndimage.zoom(grid_mode=True)``, which made the DATA.md reference table.
"""
import numpy as np

from MedSRLib.grid.geometry import output_shape
from MedSRLib.grid.spline import corner_aligned_resample
from MedSRLib.progress import report
from .base import Method, MethodKind, RunSettings, register


class SplineInterpolation(Method):
    kind = MethodKind.INTERPOLATION
    order = 1

    def run(self, image, scale_xyz, spacing, settings: RunSettings):
        voxels_out = np.prod(output_shape(image.shape, scale_xyz), dtype=float)
        # float32 output, plus scipy's float64 copy of the spline-filtered input for order > 1.
        settings.require_memory(4 * voxels_out + (8 * image.size if self.order > 1 else 0), f"{self.name} interpolation")
        report(0, 1, settings.progress, settings.cancel)
        result = corner_aligned_resample(image, scale_xyz, self.order)
        report(1, 1, settings.progress, None)
        return result


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
