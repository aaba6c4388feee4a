"""A model's inference settings, read from its checkpoint metadata: the single source of how the model is run.

Fields (beside the weights' architecture and training provenance):

* ``scales`` or ``scale_range``: the scales it serves (see :mod:`MedSRLib.models.scales`);
* ``axes``: ``"3d"`` (3D windows), ``"2d-in-plane"`` (2D slices along ``slice_axis``, their two axes scaled) or
  ``"2d-through-plane"`` (the volume is interpolated onto the output grid, then slices through the thick axis are
  refined; ``orientations`` 1 or 2 of them averaged);
* ``slice_axis``: the array axis (0, 1, 2 = k, j, i) the slices of a 2d-in-plane model were taken along in training
  (a run takes them along the axis its scale leaves at 1: :meth:`InferenceSettings.for_run`);
* ``conditioning``: ``"none"`` (``model(x)``) or ``"coordinates"`` (``model(x, coordinates, scale)``, an
  arbitrary-scale network; see :mod:`MedSRLib.engine.tiling`);
* ``patch``: the patch the model was trained on, in input voxels of the window axes (required; informative);
* ``inference_patch`` / ``inference_stride``: the tiling window and stride to run it with (input voxels of the window
  axes); when absent, the method's defaults (``None`` there: whole slices for per-scan models);
* ``normalisation``: how intensities were mapped to [0, 1] for training.

Optional fields a checkpoint leaves out take the method's defaults (its class attributes).
"""
from dataclasses import dataclass, replace
from typing import Iterable, Optional, Tuple

from MedSRLib.errors import CheckpointError, InputError
from MedSRLib.grid.geometry import format_scale
from .scales import ScaleSupport, unit_axes

AXES = ("3d", "2d-in-plane", "2d-through-plane")
CONDITIONINGS = ("none", "coordinates")


def _positive_ints(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in value)


def _optional_tuple(value) -> Optional[Tuple[int, ...]]:
    return None if value is None else tuple(value)


@dataclass(frozen=True)
class InferenceSettings:
    method: str
    scales: ScaleSupport
    axes: str
    patch: Tuple[int, ...]
    normalisation: dict
    slice_axis: int = 0
    conditioning: str = "none"
    inference_patch: Optional[Tuple[int, ...]] = None
    inference_stride: Optional[Tuple[int, ...]] = None
    orientations: Optional[int] = None

    @classmethod
    def from_metadata(cls, metadata: dict, source: str = "checkpoint metadata",
                      defaults: Optional[dict] = None) -> "InferenceSettings":
        """Read and check the inference fields; ``defaults`` fills the optional ones the metadata leaves out.
        Raises CheckpointError naming the first malformed field."""
        def fail(field, expected):
            raise CheckpointError(f"In {source}, field '{field}' is missing or is not {expected}.")

        values = {**(defaults or {}), **{key: value for key, value in metadata.items() if value is not None}}
        if values.get("axes") not in AXES:
            fail("axes", f"one of {', '.join(AXES)}")
        if not _positive_ints(values.get("patch")):
            fail("patch", "a list of positive patch sizes")
        for field in ("inference_patch", "inference_stride"):
            if values.get(field) is not None and not _positive_ints(values[field]):
                fail(field, "a list of positive sizes")
        if values.get("slice_axis", 0) not in (0, 1, 2):
            fail("slice_axis", "an array axis 0, 1 or 2")
        if values.get("conditioning", "none") not in CONDITIONINGS:
            fail("conditioning", f"one of {', '.join(CONDITIONINGS)}")
        if values.get("orientations") not in (None, 1, 2):
            fail("orientations", "1 or 2")
        normalisation = values.get("normalisation")
        if not isinstance(normalisation, dict):
            fail("normalisation", "an object with a 'mode'")
        if not isinstance(normalisation.get("mode"), str):
            fail("normalisation.mode", "a normalisation mode")
        method = values.get("method")
        if not isinstance(method, str) or not method:
            fail("method", "a method name")
        return cls(method=method, scales=ScaleSupport.from_document(values, source), axes=values["axes"],
                   patch=tuple(values["patch"]), normalisation=normalisation,
                   slice_axis=values.get("slice_axis", 0), conditioning=values.get("conditioning", "none"),
                   inference_patch=_optional_tuple(values.get("inference_patch")),
                   inference_stride=_optional_tuple(values.get("inference_stride")),
                   orientations=values.get("orientations"))

    def for_run(self, method_name: str, scale_xyz: Iterable[float]) -> "InferenceSettings":
        """These settings for running ``method_name`` at ``scale_xyz``; CheckpointError (or InputError for a scale no
        slice model can take) unless this model was trained for that method and serves that scale.

        A 2D in-plane model serves its in-plane factors on any slice axis: the slices are taken along the array axis
        whose factor is 1 (the checkpoint's own slice axis first when several are), so a model trained on axial
        slices runs on sagittal ones for ``--scale 1,4,4``. The returned settings carry that axis. A through-plane
        model serves its thick factors along any one axis (the engine takes its slices through that axis)."""
        if self.method != method_name:
            raise CheckpointError(f"Checkpoint was trained for method '{self.method}', not '{method_name}'.")
        scale = tuple(float(factor) for factor in scale_xyz)
        if self.axes == "2d-through-plane":
            if not self.scales.serves_through_plane(scale):
                raise CheckpointError(f"Checkpoint supports the through-plane scales {self.scales.describe()} (that "
                                      f"thick factor along any one axis), not {format_scale(scale)}.")
            return self
        if self.axes != "2d-in-plane":
            if not self.scales.contains(scale):
                raise CheckpointError(f"Checkpoint supports the scales {self.scales.describe()}, not "
                                      f"{format_scale(scale)}.")
            return self
        if not unit_axes(scale):
            raise three_axis_factor_error(method_name, scale, f"{format_scale(self.scales.default())} for slices "
                                                              f"along {'zyx'[self.slice_axis]}")
        slice_axis = self.scales.serves_in_plane(scale, self.slice_axis)
        if slice_axis is not None:
            return replace(self, slice_axis=slice_axis)
        raise CheckpointError(f"Checkpoint supports the in-plane scales {self.scales.describe()} (their two in-plane "
                              f"factors on any slice axis), not {format_scale(scale)}.")


def three_axis_factor_error(method_name: str, scale_xyz, example: str) -> InputError:
    """The sentence for an in-plane method asked for a factor above 1 on all three axes."""
    return InputError(f"Method '{method_name}' super-resolves 2D slices in-plane: give a factor of 1 along the axis the "
                      f"slices are taken along (e.g. {example}), not {format_scale(scale_xyz)}, or the option "
                      "two_planes to run it on two sets of slices; for a 3D factor use a 3D method such as arssr.")
