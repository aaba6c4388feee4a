"""Low-resolution versions of whole volumes (array and geometry), for demos, training data and the ``degrade`` command.

The array operators live in :mod:`MedSRLib.degrade`; this module adds the corner-aligned low-resolution grid:
spacing · f and the origin moved by D · (s' − s) / 2 (geometry.output_grid with scale 1 / f). Axes are cropped at their
end, so the outer corner of the first voxel never moves.
"""
from typing import Optional

import numpy as np

from MedSRLib.grid import degradation as degrade
from MedSRLib.errors import InputError
from MedSRLib.grid.geometry import ScaleLike, array_factors, output_grid
from MedSRLib.io.volume import Volume, validate_volume

OPERATORS = ("block-mean", "linear", "nearest", "kspace", "thick-slices")
NOISES = ("gaussian", "rician")


def simulate_low_resolution(volume: Volume, operator: str = "block-mean", factor: ScaleLike = 2, *, axis: str = "z",
                            profile: str = "box", gap: float = 0.0, noise: Optional[str] = None, sigma: float = 0.01,
                            seed: int = 0) -> Volume:
    """Degrade ``volume`` by ``factor`` (one number or one per (x, y, z) axis; for thick slices one number along ``axis``).

    ``kspace`` keeps the grid (DCSRN's input lives on the high-resolution grid). ``gap`` is in input voxels. Noise
    ``sigma`` is a fraction of the result's 99.5th percentile.
    """
    validate_volume(volume)
    if operator not in OPERATORS:
        raise InputError(f"Unknown degradation '{operator}'; choose one of {', '.join(OPERATORS)}.")
    if operator == "thick-slices":
        if axis not in ("x", "y", "z"):
            raise InputError(f"Thick-slice axis must be x, y or z, not '{axis}'.")
        physical_axis = "xyz".index(axis)
        factor_xyz = tuple(float(factor) if a == physical_axis else 1.0 for a in range(3))
        array = degrade.thicken_slices(volume.array, 2 - physical_axis, float(factor), profile, gap)
    else:
        factor_xyz = _factor_triple(factor)
        factors = array_factors(factor_xyz)
        if operator == "kspace":
            array, factor_xyz = degrade.kspace_truncate(volume.array, factors), (1.0, 1.0, 1.0)
        else:
            downsample = {"block-mean": degrade.block_mean, "linear": degrade.downsample_linear,
                          "nearest": degrade.downsample_nearest}[operator]
            array = downsample(degrade.crop_to_multiple(volume.array, factors), factors)
    if noise is not None:
        if noise not in NOISES:
            raise InputError(f"Unknown noise '{noise}'; choose one of {', '.join(NOISES)}.")
        add_noise = degrade.add_gaussian_noise if noise == "gaussian" else degrade.add_rician_noise
        array = add_noise(array, sigma * float(np.percentile(array, 99.5)), seed)
    grid = output_grid(volume.size, volume.spacing, volume.origin, volume.direction, [1 / f for f in factor_xyz])
    return Volume(np.asarray(array, dtype=np.float32), grid.spacing, grid.origin, grid.direction,
                  {"degradation": {"operator": operator, "factor": list(factor_xyz)}})


def _factor_triple(factor: ScaleLike):
    if isinstance(factor, str):
        try:
            values = [float(part) for part in factor.split(",")]
        except ValueError:
            raise InputError(f"Factor '{factor}' is not a number or a comma-separated triple.") from None
    else:
        values = list(np.atleast_1d(np.asarray(factor, dtype=float)))
    values = values * 3 if len(values) == 1 else values
    if len(values) != 3 or not all(v >= 1 and float(v).is_integer() for v in values):
        raise InputError(f"Factor {factor!r} must be one whole number or three (x, y, z), each at least 1.")
    return tuple(values)
