"""The interpolation family: resampling kernels evaluated on the corner-aligned output grid, no training.

A subclass names its kernel through :meth:`InterpolationMethod.resample` and says how much memory it needs; the
memory check and progress reporting are shared here.
"""
import numpy as np

from MedSRLib.grid.geometry import output_shape
from MedSRLib.progress import report
from .base import Method, MethodKind, RunSettings


class InterpolationMethod(Method):
    kind = MethodKind.INTERPOLATION

    def working_bytes(self, image: np.ndarray, shape_out) -> float:
        """Peak bytes of the kernel's buffers beyond the input."""
        raise NotImplementedError

    def resample(self, image: np.ndarray, scale_xyz, settings: RunSettings) -> np.ndarray:
        """The float32 image on the output grid; may report progress in steps of its own between 0 and 1."""
        raise NotImplementedError

    def run(self, image, scale_xyz, spacing, settings: RunSettings):
        settings.require_memory(self.working_bytes(image, output_shape(image.shape, scale_xyz)),
                                f"{self.name} interpolation")
        report(0, 1, settings.progress, settings.cancel)
        result = self.resample(image, scale_xyz, settings)
        report(1, 1, settings.progress, None)
        return result
