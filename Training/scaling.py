"""Scales in training configs, turned into factors per array axis (k, j, i) and per network window axis.

A config gives ``scale`` (one factor or an (x, y, z) triple, whole or float) or, for arbitrary-scale recipes,
``scale_range`` (``{min: [x, y, z], max: [x, y, z]}``, optionally ``independent: true``). Axes are (x, y, z) in configs
and checkpoints, like ``medsr --scale``; arrays are (k, j, i), so array axis a has the config's factor 2 − a.
"""
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from MedSRLib.errors import InputError

Factors = Tuple[float, ...]


def xyz_triple(value, what: str) -> Tuple[float, float, float]:
    """One factor or an (x, y, z) triple as three floats of at least 1."""
    values = [value] * 3 if np.isscalar(value) else list(value)
    if len(values) != 3 or not all(isinstance(v, (int, float)) and np.isfinite(v) and v >= 1 for v in values):
        raise InputError(f"{what} must be one factor or three (x, y, z), each at least 1, not {value!r}.")
    return tuple(float(v) for v in values)


def array_factors(scale) -> Factors:
    """The (k, j, i) factors of a config ``scale``."""
    return xyz_triple(scale, "The scale")[::-1]


def window_axes(axes: str, slice_axis: int) -> Tuple[int, ...]:
    """The array axes a network's window spans: all three for "3d", the slice's two for "2d-in-plane"."""
    if axes == "3d":
        return (0, 1, 2)
    if axes == "2d-in-plane":
        return tuple(axis for axis in range(3) if axis != slice_axis)
    raise InputError(f"Windows of '{axes}' models are not cut by the paired samplers; use '3d' or '2d-in-plane'.")


def window_factors(factors: Factors, axes: str, slice_axis: int) -> Factors:
    """The factors of the window axes. A 2D in-plane model must leave its slice axis unscaled; a through-plane model's
    windows are slices whose rows run along the thick axis: (thick factor, 1)."""
    if axes == "2d-through-plane":
        return (thick_axis(factors)[1], 1.0)
    if axes == "2d-in-plane" and factors[slice_axis] != 1:
        raise InputError(f"A 2d-in-plane model cannot scale its slice axis {slice_axis} (factor "
                         f"{factors[slice_axis]:g}); give that axis the factor 1 or change slice_axis.")
    return tuple(factors[axis] for axis in window_axes(axes, slice_axis))


def thick_axis(factors: Factors) -> Tuple[int, float]:
    """(array axis, factor) of a through-plane scale: exactly one axis above 1."""
    scaled = [axis for axis, factor in enumerate(factors) if factor > 1]
    if len(scaled) != 1:
        raise InputError(f"A through-plane model scales one thick axis; give a scale above 1 on that axis only "
                         f"(e.g. [1, 1, 4]), not {list(factors[::-1])}.")
    return scaled[0], factors[scaled[0]]


@dataclass(frozen=True)
class ScaleRange:
    """Scales an arbitrary-scale model trains on. Per batch one scale is drawn: by default one uniform t in [0, 1]
    moves every axis from its minimum to its maximum together (isotropic, in-plane-only or through-plane-only ranges
    stay so); ``independent`` (true, or the fraction of batches, e.g. 0.5) draws each axis on its own."""
    low: Factors          # (k, j, i)
    high: Factors
    independent: float = 0.0

    @classmethod
    def from_config(cls, document) -> "ScaleRange":
        if not isinstance(document, dict) or not {"min", "max"} <= set(document) \
                or not set(document) <= {"min", "max", "independent"}:
            raise InputError("scale_range must be {min: [x, y, z], max: [x, y, z]} (and optionally independent: "
                             f"true), not {document!r}.")
        low, high = (array_factors(document[key]) for key in ("min", "max"))
        if any(a > b for a, b in zip(low, high)):
            raise InputError(f"scale_range min {document['min']} is above its max {document['max']} on some axis.")
        independent = document.get("independent", False)
        if not isinstance(independent, (bool, int, float)) or not 0 <= independent <= 1:
            raise InputError(f"scale_range independent must be true, false or a fraction of the batches in [0, 1], "
                             f"not {independent!r}.")
        return cls(low, high, float(independent))

    def _draws_axes_independently(self, rng: np.random.Generator) -> bool:
        # Only a mixed range spends a random number on the choice, so pure ranges draw as they always did.
        return self.independent == 1 or (0 < self.independent < 1 and rng.random() < self.independent)

    def draw(self, rng: np.random.Generator) -> Factors:
        fractions = rng.random(3) if self._draws_axes_independently(rng) else np.full(3, rng.random())
        return tuple(float(a + t * (b - a)) for a, b, t in zip(self.low, self.high, fractions))

    def spread(self, count: int) -> Sequence[Factors]:
        """``count`` scales evenly along the range's diagonal, from min to max (validation scales)."""
        return [tuple(float(a + t * (b - a)) for a, b in zip(self.low, self.high))
                for t in np.linspace(0, 1, count)]

    def to_document(self) -> dict:
        """The checkpoint's ``scale_range`` field, in (x, y, z) order."""
        return {"min": list(self.low[::-1]), "max": list(self.high[::-1])}
