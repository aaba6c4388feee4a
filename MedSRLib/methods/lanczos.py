"""Lanczos-3 interpolation onto the corner-aligned output grid, one axis at a time.

Each axis is resampled by a (n_out × n_in) weight matrix: output voxel ``o`` sits at input index
``x = (o + 0.5) / f - 0.5`` and takes the 2·a input voxels around it weighted by sinc(d)·sinc(d / a), d = x − j, rows
normalised to sum to one. Indices beyond the volume mirror about its outer face, as in the spline methods.
"""
import numpy as np

from ..geometry import array_factors, output_shape
from ..progress import report
from .base import Method, MethodKind, RunSettings, register

LOBES = 3


def mirror_index(index: np.ndarray, length: int) -> np.ndarray:
    """Reflect indices about the outer faces of [0, length): -1 → 0, length → length - 1."""
    period = 2 * length
    index = np.mod(index, period)
    return np.where(index >= length, period - 1 - index, index)


def lanczos_taps(positions: np.ndarray, lobes: int = LOBES):
    """For each (fractional) input position: the 2·lobes input indices around it and their normalised weights."""
    first_tap = np.floor(positions).astype(int) - lobes + 1
    taps = first_tap[:, None] + np.arange(2 * lobes)[None, :]
    distance = positions[:, None] - taps
    kernel = np.sinc(distance) * np.sinc(distance / lobes)
    return taps, kernel / kernel.sum(axis=1, keepdims=True)


def lanczos_weights(length_in: int, length_out: int, factor: float, lobes: int = LOBES) -> np.ndarray:
    positions = (np.arange(length_out) + 0.5) / factor - 0.5
    taps, kernel = lanczos_taps(positions, lobes)
    weights = np.zeros((length_out, length_in))
    rows = np.repeat(np.arange(length_out), 2 * lobes)
    np.add.at(weights, (rows, mirror_index(taps, length_in).ravel()), kernel.ravel())
    return weights.astype(np.float32)


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
