"""Lanczos-3 interpolation onto the corner-aligned output grid, one axis at a time.

Each axis is resampled by a (n_out × n_in) weight matrix: output voxel ``o`` sits at input index
``x = (o + 0.5) / f - 0.5`` and takes the 2·a input voxels around it weighted by sinc(d)·sinc(d / a), d = x − j, rows
normalised to sum to one. Indices beyond the volume mirror about its outer face, as in the spline methods.
"""
import numpy as np

from MedSRLib.grid.geometry import array_factors, output_shape
from MedSRLib.progress import report
from MedSRLib.grid.lanczos import lanczos_weights
from .base import Method, MethodKind, RunSettings, register


@register
class LanczosInterpolation(Method):
    name = "lanczos"
    kind = MethodKind.INTERPOLATION
    description = "Lanczos-3 windowed-sinc interpolation: sharper than B-spline, may ring at edges; any modality, any scale."

    def run(self, image, scale_xyz, spacing, settings: RunSettings):
        shape_out = output_shape(image.shape, scale_xyz)
        # The result plus one intermediate of the same size.
        settings.require_memory(8 * np.prod(shape_out, dtype=float), "Lanczos interpolation")
        result = np.asarray(image, dtype=np.float32)
        for axis, factor in enumerate(array_factors(scale_xyz)):
            report(axis, 3, settings.progress, settings.cancel)
            if shape_out[axis] == result.shape[axis] and factor == 1:
                continue
            weights = lanczos_weights(result.shape[axis], shape_out[axis], factor)
            result = np.moveaxis(np.tensordot(weights, result, axes=([1], [axis])), 0, axis)
        report(3, 3, settings.progress, None)
        return np.ascontiguousarray(result, dtype=np.float32)
