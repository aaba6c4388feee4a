"""Volumes in memory and on disk.

A :class:`Volume` is a 3D scalar array in SimpleITK's (k, j, i) order plus its geometry as SimpleITK gives it, in
ITK's LPS physical space: ``spacing`` and ``origin`` in (x, y, z) = (i, j, k) order and ``direction`` as 9 numbers,
row-major, whose columns are the physical directions of the i, j and k axes.
"""
import warnings
from dataclasses import dataclass, field
from typing import Tuple

import numpy as np
import SimpleITK as sitk

from MedSRLib.errors import InputError

# Integer volumes with at most this many distinct values look like label maps, not intensities.
LABEL_MAP_MAX_VALUES = 64


@dataclass
class Volume:
    array: np.ndarray
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: Tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.spacing = tuple(float(v) for v in self.spacing)
        self.origin = tuple(float(v) for v in self.origin)
        self.direction = tuple(float(v) for v in np.asarray(self.direction, dtype=float).ravel())

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def size(self) -> Tuple[int, int, int]:
        """Number of voxels in (x, y, z) = (i, j, k) order, like SimpleITK's GetSize()."""
        return tuple(int(n) for n in self.array.shape[::-1])

    def with_array(self, array: np.ndarray, spacing=None, origin=None) -> "Volume":
        """A new volume with the same direction and the given array (and optionally another grid)."""
        return Volume(array, self.spacing if spacing is None else spacing,
                      self.origin if origin is None else origin, self.direction, dict(self.metadata))

    def index_to_physical(self, index_ijk) -> np.ndarray:
        """Physical (LPS) position of a continuous voxel index given in (i, j, k) order."""
        return np.asarray(self.origin) + self.direction_matrix @ (np.asarray(self.spacing) * np.asarray(index_ijk, float))

    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(self.array, isVector=False)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> "Volume":
        return cls(sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def validate_volume(volume: Volume, name: str = "the input volume") -> None:
    """Raise :class:`InputError` (one sentence) when the volume cannot be super-resolved; warn on label maps."""
    array = volume.array
    if array.ndim != 3:
        kind = "2D image" if array.ndim == 2 else f"{array.ndim}D array"
        raise InputError(f"{name} is a {kind}; MedSR needs a 3D scalar volume (one channel, three axes).")
    if min(array.shape) < 2:
        raise InputError(f"{name} has shape {array.shape}, which is a 2D image; MedSR needs at least 2 voxels along every axis.")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{name} has voxel type {array.dtype}; MedSR needs real-valued scalar voxels.")
    if len(volume.spacing) != 3 or not all(np.isfinite(volume.spacing)) or min(volume.spacing) <= 0:
        raise InputError(f"{name} has spacing {volume.spacing}; every spacing must be a positive number of mm.")
    matrix = volume.direction_matrix
    if not np.all(np.isfinite(matrix)) or abs(abs(np.linalg.det(matrix)) - 1) > 1e-3:
        raise InputError(f"{name} has a direction matrix that is not a rotation (determinant {np.linalg.det(matrix):.3f}).")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{name} has {bad} NaN or infinite voxels; replace them (e.g. with 0) before super-resolving.")
    low, high = array.min(), array.max()
    if low == high:
        raise InputError(f"{name} is constant (every voxel is {low}); there is nothing to super-resolve.")
    if np.issubdtype(array.dtype, np.integer) and len(np.unique(array)) <= LABEL_MAP_MAX_VALUES:
        warnings.warn(f"{name} has only {len(np.unique(array))} distinct integer values and looks like a label map; "
                      "MedSR methods expect intensities, use nearest-neighbour resampling for labels.", stacklevel=2)


