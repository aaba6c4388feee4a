"""Spline resampling (nearest, linear, cubic B-spline) onto the corner-aligned output grid.

Output voxel ``o`` along an axis with factor ``f`` sits at input index ``(o + 0.5) / f - 0.5`` (the grid of
``geometry.output_grid``, which networks use too, so difference images line up). Borders mirror about the volume's
outer face (scipy's "grid-mirror"), like ``scipy.ndimage.zoom(grid_mode=True)``, which made the reference table.
"""
import numpy as np
from scipy import ndimage

from .geometry import array_factors, output_shape


def corner_aligned_resample(image: np.ndarray, scale_xyz, order: int) -> np.ndarray:
    """Spline-resample ``image`` (k, j, i) by an (x, y, z) scale onto the corner-aligned grid."""
    factors = np.asarray(array_factors(scale_xyz))
    return ndimage.affine_transform(
        image, 1.0 / factors, offset=0.5 / factors - 0.5, output_shape=output_shape(image.shape, scale_xyz),
        output=np.float32, order=order, mode="grid-mirror", prefilter=order > 1)
