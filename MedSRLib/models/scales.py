"""Which scales a model serves: a set of (x, y, z) triples, or a range of float scales per axis (arbitrary-scale models).

Checkpoint metadata and catalog entries hold either ``"scales": [[x, y, z], …]`` or
``"scale_range": {"min": [x, y, z], "max": [x, y, z]}``; :class:`ScaleSupport` reads both and answers "does this
model serve that scale?" with one clear sentence when it does not.
"""
import math
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

from MedSRLib.errors import CheckpointError
from MedSRLib.grid.geometry import format_scale

Scale = Tuple[float, float, float]


def _is_factor(number) -> bool:
    return isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number) and number > 0


def _is_triple(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 3 and all(map(_is_factor, value))


def parse_scales(value, where: str) -> Tuple[Scale, ...]:
    """``value`` as a tuple of (x, y, z) float triples; CheckpointError naming ``where`` unless it is a non-empty list
    of positive factor triples."""
    if not isinstance(value, (list, tuple)) or not value or not all(map(_is_triple, value)):
        raise CheckpointError(f"In {where}, 'scales' must be a non-empty list of (x, y, z) positive factors.")
    return tuple(tuple(float(factor) for factor in scale) for scale in value)


def scale_in(scale_xyz: Iterable[float], scales: Iterable[Scale]) -> bool:
    scale = tuple(float(factor) for factor in scale_xyz)
    return any(all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(scale, allowed)) for allowed in scales)


def moved_to_slice_axis(scale_xyz: Iterable[float], from_axis: int, to_axis: int) -> Scale:
    """The (x, y, z) scale of slices along array axis ``from_axis`` rewritten as the same in-plane factors — the
    slices' rows (the lower remaining array axis) and columns (the higher) — on slices along array axis ``to_axis``.
    ``moved_to_slice_axis((1, 2, 4), 2, 0)``: rows k ×4 and columns j ×2 of sagittal slices → (1, 2, 4)[x, y, z] becomes
    rows j ×4 and columns i ×2 of axial slices, (2, 4, 1)."""
    by_array_axis = tuple(float(factor) for factor in scale_xyz)[::-1]
    rows, columns = (by_array_axis[axis] for axis in range(3) if axis != from_axis)
    moved = [1.0, 1.0, 1.0]
    to_rows, to_columns = (axis for axis in range(3) if axis != to_axis)
    moved[to_rows], moved[to_columns] = rows, columns
    return tuple(moved[::-1])


def unit_axes(scale_xyz: Iterable[float]) -> List[int]:
    """The array axes (0, 1, 2 = k, j, i) whose factor is 1: where a 2D in-plane model can take its slices."""
    by_array_axis = tuple(scale_xyz)[::-1]
    return [axis for axis in range(3) if math.isclose(float(by_array_axis[axis]), 1.0)]


def format_scales(scales: Iterable[Iterable[float]]) -> str:
    return ", ".join(format_scale(scale) for scale in scales)


@dataclass(frozen=True)
class ScaleSupport:
    """Exactly one of ``scales`` (the listed triples) and ``range`` ((min triple, max triple), inclusive per axis)."""
    scales: Optional[Tuple[Scale, ...]] = None
    range: Optional[Tuple[Scale, Scale]] = None

    @classmethod
    def from_document(cls, document: dict, where: str) -> "ScaleSupport":
        """Read ``scales`` or ``scale_range`` from a metadata or catalog object; CheckpointError naming ``where``."""
        has_scales, has_range = document.get("scales") is not None, document.get("scale_range") is not None
        if has_scales == has_range:
            raise CheckpointError(f"In {where}, give exactly one of 'scales' (a list of (x, y, z) factors) and "
                                  "'scale_range' ({'min': [x, y, z], 'max': [x, y, z]}).")
        if has_scales:
            return cls(scales=parse_scales(document["scales"], where))
        bounds = document["scale_range"]
        if not isinstance(bounds, dict) or not all(_is_triple(bounds.get(key)) for key in ("min", "max")) \
                or any(low > high or low < 1 for low, high in zip(bounds["min"], bounds["max"])):
            raise CheckpointError(f"In {where}, 'scale_range' must be {{'min': [x, y, z], 'max': [x, y, z]}} with "
                                  "1 ≤ min ≤ max on every axis.")
        return cls(range=(tuple(map(float, bounds["min"])), tuple(map(float, bounds["max"]))))

    def contains(self, scale_xyz: Iterable[float]) -> bool:
        if self.scales is not None:
            return scale_in(scale_xyz, self.scales)
        low, high = self.range
        return all(a - 1e-6 <= factor <= b + 1e-6 for factor, a, b in zip(scale_xyz, low, high))

    def serves_in_plane(self, scale_xyz: Iterable[float], trained_slice_axis: int) -> Optional[int]:
        """For a 2D in-plane model trained on slices along ``trained_slice_axis``: the array axis to take the slices
        along for ``scale_xyz`` (the trained axis first when several have factor 1), or None if it serves none."""
        for axis in sorted(unit_axes(scale_xyz), key=lambda axis: axis != trained_slice_axis):
            if self.contains(moved_to_slice_axis(scale_xyz, axis, trained_slice_axis)):
                return axis
        return None

    def serves_through_plane(self, scale_xyz: Iterable[float]) -> bool:
        """For a through-plane model (its scales name the thick axis it was trained along): whether it serves the thick
        factor of ``scale_xyz`` — exactly one factor above 1 — on whichever axis that factor is. The engine turns the
        slices, so the thick axis is the scan's; only the factor must be one the model serves."""
        thick = [factor for factor in map(float, scale_xyz) if factor > 1 + 1e-9]
        if len(thick) != 1:
            return False
        trained_axis = max(range(3), key=lambda axis: self.default()[axis])
        moved = [1.0, 1.0, 1.0]
        moved[trained_axis] = thick[0]
        return self.contains(moved)

    def default(self) -> Scale:
        """The scale a front end proposes: the first listed, or the largest of the range."""
        return self.scales[0] if self.scales is not None else self.range[1]

    def describe(self) -> str:
        if self.scales is not None:
            return format_scales(self.scales)
        low, high = self.range
        return f"any from {format_scale(low)} to {format_scale(high)}"

    def to_document(self) -> dict:
        if self.scales is not None:
            return {"scales": [list(scale) for scale in self.scales]}
        return {"scale_range": {"min": list(self.range[0]), "max": list(self.range[1])}}
