"""Intensity normalisation to [0, 1] with an exact inverse.

Networks see intensities in [0, 1]. :class:`Normaliser` maps ``low → 0`` and ``high → 1`` affinely; ``low`` and ``high``
come from percentiles (default 0.5 / 99.5), the volume's min/max, or a fixed CT window. The map is *not* clipped by
default, so :meth:`Normaliser.inverse` restores every voxel exactly (up to float32 rounding); the few voxels beyond the
percentiles reach the method slightly outside [0, 1]. ``clip=True`` clips, as the evaluation protocol does.

Output dtype policy: results are float32 by default, since SR creates values between the input's levels; with
``output_dtype="input"`` they are rounded (for integer types) and clamped to the input type's range.
"""
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import numpy as np

from MedSRLib.errors import InputError

MODES = ("percentile", "minmax", "window")


@dataclass(frozen=True)
class Normaliser:
    low: float
    high: float
    mode: str = "percentile"
    clip: bool = False

    @classmethod
    def fit(cls, array: np.ndarray, mode: str = "percentile", percentiles: Tuple[float, float] = (0.5, 99.5),
            window: Optional[Tuple[float, float]] = None, clip: bool = False) -> "Normaliser":
        """Choose low/high from the data (percentile, minmax) or from a (center, width) CT ``window``."""
        if mode == "percentile":
            low, high = np.percentile(array, percentiles)
        elif mode == "minmax":
            low, high = array.min(), array.max()
        elif mode == "window":
            if window is None:
                raise InputError("Window normalisation needs a window as (center, width), e.g. 40,400 for soft tissue CT.")
            center, width = window
            if width <= 0:
                raise InputError(f"CT window width must be positive, not {width}.")
            low, high = center - width / 2, center + width / 2
        else:
            raise InputError(f"Unknown normalisation '{mode}'; choose one of {', '.join(MODES)}.")
        if not high > low:
            # Mostly-constant volumes (e.g. a small bright object on zero background) collapse the percentiles.
            low, high = array.min(), array.max()
        return cls(float(low), float(high), mode, clip)

    def forward(self, array: np.ndarray) -> np.ndarray:
        out = (np.asarray(array, dtype=np.float32) - np.float32(self.low)) / np.float32(self.high - self.low)
        return np.clip(out, 0, 1, out=out) if self.clip else out

    def inverse(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array, dtype=np.float32) * np.float32(self.high - self.low) + np.float32(self.low)

    def to_dict(self) -> dict:
        return asdict(self)


def cast_output(array: np.ndarray, output_dtype, input_dtype) -> np.ndarray:
    """Apply the output dtype policy: "float32" (default) or "input" (round and clamp to the input's type)."""
    if output_dtype in (None, "float32"):
        return array.astype(np.float32, copy=False)
    if output_dtype != "input":
        raise InputError(f"Output type '{output_dtype}' is not supported; use 'float32' or 'input'.")
    target = np.dtype(input_dtype)
    if np.issubdtype(target, np.integer):
        info = np.iinfo(target)
        return np.clip(np.rint(array), info.min, info.max).astype(target)
    info = np.finfo(target)  # float16 overflows to inf beyond ±65504 otherwise
    return np.clip(array, info.min, info.max).astype(target)
