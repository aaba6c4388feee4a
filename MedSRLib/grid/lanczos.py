"""The Lanczos kernel on the corner-aligned grid, shared by the lanczos method and the network layers that start from it.

Output voxel ``o`` along an axis of factor ``f`` sits at input index ``x = (o + 0.5) / f - 0.5`` and takes the 2·a input
voxels around it weighted by sinc(d)·sinc(d / a), d = x − j, rows normalised to sum to one. Indices beyond the volume
mirror about its outer face, as in the spline methods.
"""
import numpy as np

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
