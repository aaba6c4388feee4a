"""The network families: trained networks run by the engine, as their checkpoints say.

A learned method is a subclass that declares its name, description and defaults; its weights come from ``--checkpoint``
(a file or a catalog name) or, by default, from the first catalog model for the method and scale. The checkpoint's
inference settings (:mod:`MedSRLib.models.inference_settings`) decide how the network runs — 3D windows, 2D slices
along an axis, or the through-plane mode; whole or float scales; with or without coordinate input — and the class
attributes below are only defaults for a model that leaves a setting out.

torch is imported only when a learned method actually runs.
"""
from pathlib import Path

import numpy as np

from MedSRLib.errors import CheckpointError, InputError
from MedSRLib.grid.geometry import array_factors, format_scale, output_shape
from .base import Method, MethodKind, RunSettings
from .options import MethodOption


class NetworkMethod(Method):
    axes = "3d"
    slice_axis = 0
    conditioning = "none"
    orientations = 1
    # Peak activation memory per output voxel of a window, in float32 values, for the engine's memory estimate.
    activation_factor = 64.0

    def setting_defaults(self) -> dict:
        """What a checkpoint that leaves these settings out gets."""
        return {"axes": self.axes, "slice_axis": self.slice_axis, "conditioning": self.conditioning,
                "orientations": self.orientations}

    def model_source(self, scale_xyz, settings: RunSettings) -> str:
        """``--checkpoint`` (a file or a catalog name), else the catalog's default model for this method and scale on
        the device the run uses."""
        from MedSRLib.engine.devices import device_type
        from MedSRLib.models.catalog import default_model_for
        if settings.checkpoint is not None:
            return settings.checkpoint
        entry = default_model_for(self.name, scale_xyz, axes=self.axes, device=device_type(settings.device))
        if entry is None:
            raise CheckpointError(f"No trained model for '{self.name}' at scale {format_scale(scale_xyz)} ships with "
                                  "MedSR; train one (see Training/) and pass it with --checkpoint.")
        return entry.name

    def _header_settings(self, scale_xyz, settings: RunSettings):
        """The model's inference settings for this scale from its checkpoint's header (a catalog model is fetched if
        need be); refuses a model for another method or scale."""
        from MedSRLib.models.checkpoints import checkpoint_path, read_metadata
        from MedSRLib.models.inference_settings import InferenceSettings
        path = checkpoint_path(self.model_source(scale_xyz, settings), progress=settings.progress,
                               cancel=settings.cancel)
        return InferenceSettings.from_metadata(read_metadata(path), str(path), self.setting_defaults()).for_run(
            self.name, scale_xyz)

    def check_scale(self, scale_xyz, settings: RunSettings) -> None:
        """Refuse, before any work, a model for another method or scale."""
        self._header_settings(scale_xyz, settings)

    def normalisation(self, scale_xyz, settings: RunSettings) -> dict:
        """The normalisation the model was trained with, from its checkpoint's header."""
        return self._header_settings(scale_xyz, settings).normalisation

    def network_input(self, image, scale_xyz, settings: RunSettings):
        """The array the network is tiled over and its factor per array axis. A network that works on the output
        grid (DCSRN) overrides this to interpolate first and return factors (1, 1, 1)."""
        return image, array_factors(scale_xyz)

    def run(self, image, scale_xyz, spacing, settings: RunSettings):
        from dataclasses import replace

        from MedSRLib.engine.through_plane import interpolate_and_refine
        from MedSRLib.engine.tiling import run_tiled
        from MedSRLib.files import file_sha256
        from MedSRLib.models.catalog import find_model
        from MedSRLib.models.checkpoints import load_model
        from MedSRLib.models.inference_settings import InferenceSettings

        source = self.model_source(scale_xyz, settings)
        model, metadata = load_model(source)
        model_settings = InferenceSettings.from_metadata(metadata, str(source), self.setting_defaults()).for_run(
            self.name, scale_xyz)
        sha256 = file_sha256(source) if Path(source).is_file() else find_model(source).sha256
        options = replace(self._tiling_options(model_settings, settings), model_key=sha256)
        if model_settings.axes == "2d-through-plane":
            # The interpolated volume, one refined orientation and the running sum, float32.
            settings.require_memory(3 * 4 * float(np.prod(output_shape(image.shape, scale_xyz))),
                                    f"Method '{self.name}'")
            result = interpolate_and_refine(model, image, scale_xyz, options,
                                            self.orientations_to_refine(model_settings, settings),
                                            settings.progress, settings.cancel)
        else:
            network_image, factors = self.network_input(image, scale_xyz, settings)
            result = run_tiled(model, network_image, factors, options, settings.progress, settings.cancel)
        settings.provenance.update(checkpoint=str(source), checkpoint_sha256=sha256)
        return result

    def orientations_to_refine(self, model_settings, settings: RunSettings) -> int:
        """How many through-plane orientations a 2d-through-plane model refines and averages: the model's setting; a
        method with an option for it overrides this."""
        return model_settings.orientations

    def _tiling_options(self, model_settings, settings: RunSettings):
        """The engine's TilingOptions for this model: the user's patch and stride, else the model's, else the method's."""
        from MedSRLib.engine.tiling import TilingOptions
        return TilingOptions(
            patch=settings.patch or model_settings.inference_patch or self.default_patch,
            stride=settings.stride or model_settings.inference_stride or self.default_stride,
            blend=settings.blend, batch_size=settings.batch_size, device=settings.device, backend=settings.backend,
            mode="3d" if model_settings.axes == "3d" else "2d", slice_axis=model_settings.slice_axis,
            conditioning=model_settings.conditioning, memory_budget_gb=settings.memory_budget_gb,
            activation_factor=self.activation_factor)

    def tiled_pass(self, shape, scale_xyz, settings: RunSettings):
        from dataclasses import replace

        from MedSRLib.engine.through_plane import in_plane_axes, thick_axis_of
        model_settings = self._header_settings(scale_xyz, settings)
        options = self._tiling_options(model_settings, settings)
        out_shape = output_shape(shape, scale_xyz)
        if model_settings.axes == "2d-through-plane":
            # Slices through the thick axis of the volume interpolated onto the output grid.
            return out_shape, (1, 1, 1), replace(options, slice_axis=in_plane_axes(thick_axis_of(scale_xyz))[0])
        if type(self).network_input is not NetworkMethod.network_input:
            return out_shape, (1, 1, 1), options  # the network runs on the input interpolated first (DCSRN)
        return tuple(shape), array_factors(scale_xyz), options

    def info(self) -> dict:
        return {**super().info(), "axes": self.axes}


class PatchNetworkMethod(NetworkMethod):
    """3D networks over 3D windows; patch and stride are input voxels."""
    kind = MethodKind.PATCH_3D
    axes = "3d"


class SliceNetworkMethod(NetworkMethod):
    """2D networks over the slices along one array axis (``axes = "2d-in-plane"``), or over the slices through the
    thick axis of a volume first interpolated onto the output grid (``"2d-through-plane"``); patch and stride are 2D.

    An in-plane model serves a factor above 1 on all three axes with ``two_planes``: it runs on the slices along one
    array axis (scaling the other two) and cubic B-spline scales the slice axis, then the same along a second array
    axis, and the two volumes are averaged — every axis gets the model's detail from at least one pass."""
    kind = MethodKind.SLICE_2D
    axes = "2d-in-plane"
    options = (
        MethodOption("two_planes", "bool", "for a factor above 1 on all three axes (e.g. 4,4,4): run the model on "
                     "the slices along two array axes in turn, B-spline the remaining axis of each pass, and average "
                     "the two (twice the time)", default=False),
    )

    def model_source(self, scale_xyz, settings: RunSettings) -> str:
        from MedSRLib.models.inference_settings import three_axis_factor_error
        from MedSRLib.models.scales import unit_axes
        if settings.checkpoint is None and self.axes == "2d-in-plane" and not unit_axes(scale_xyz):
            raise three_axis_factor_error(self.name, scale_xyz, "4×4×1 for axial slices")
        return super().model_source(scale_xyz, settings)

    def plane_passes(self, scale_xyz, settings: RunSettings):
        """With ``two_planes``: [(the model's in-plane scale, the B-spline scale of the slice axis)] for the slices
        along array axes 0 and 1 — each a scale (x, y, z) with a factor of 1 where the other has its factor; None
        without the option."""
        if not self.option_values(settings.options).get("two_planes"):
            return None
        factors = tuple(float(factor) for factor in scale_xyz)
        if min(factors) <= 1:
            raise InputError(f"Option two_planes is for a factor above 1 on all three axes, not "
                             f"{format_scale(factors)}; leave it off to run the model on one set of slices.")
        passes = []
        for slice_axis in (0, 1):
            xyz_axis = 2 - slice_axis
            passes.append((tuple(1.0 if axis == xyz_axis else factor for axis, factor in enumerate(factors)),
                           tuple(factor if axis == xyz_axis else 1.0 for axis, factor in enumerate(factors))))
        return passes

    def check_scale(self, scale_xyz, settings: RunSettings) -> None:
        for in_plane, _ in self.plane_passes(scale_xyz, settings) or [(scale_xyz, None)]:
            super().check_scale(in_plane, settings)

    def normalisation(self, scale_xyz, settings: RunSettings) -> dict:
        passes = self.plane_passes(scale_xyz, settings)
        return super().normalisation(passes[0][0] if passes else scale_xyz, settings)

    def tiled_pass(self, shape, scale_xyz, settings: RunSettings):
        """With ``two_planes``, the first of the two passes (the second is the same work)."""
        passes = self.plane_passes(scale_xyz, settings)
        return super().tiled_pass(shape, passes[0][0] if passes else scale_xyz, settings)

    def run(self, image, scale_xyz, spacing, settings: RunSettings):
        from dataclasses import replace

        from MedSRLib.grid.spline import corner_aligned_resample
        passes = self.plane_passes(scale_xyz, settings)
        if not passes:
            return super().run(image, scale_xyz, spacing, settings)
        settings.require_memory(2 * 4 * float(np.prod(output_shape(image.shape, scale_xyz))),
                                f"Method '{self.name}' on two planes")
        total = None
        for index, (in_plane, slice_axis_scale) in enumerate(passes):
            def pass_progress(done, total_steps, index=index):
                if settings.progress is not None:
                    settings.progress(int(1000 * (index + done / total_steps) / len(passes)), 1000)
            in_plane_result = super().run(image, in_plane, spacing, replace(settings, progress=pass_progress))
            result = corner_aligned_resample(in_plane_result, slice_axis_scale, order=3)
            total = result if total is None else total + result
        return total / len(passes)

    def default_scale(self, spacing_xyz, checkpoint=None):
        """An in-plane model's own default factors (``checkpoint``, else the method's first catalog model), on the
        slices of the scan's finely sampled plane — along its thick axis — or, for an isotropic scan, on the slices the
        model was trained on."""
        from MedSRLib.grid.geometry import detect_thick_axis
        from MedSRLib.models.catalog import list_models
        from MedSRLib.models.checkpoints import checkpoint_path, read_metadata
        from MedSRLib.models.inference_settings import InferenceSettings
        from MedSRLib.models.scales import moved_to_slice_axis
        source = checkpoint or next((entry.name for entry in list_models() if entry.method == self.name), None)
        if source is None:
            return super().default_scale(spacing_xyz)  # no model at all: running will say so
        path = checkpoint_path(source)
        model = InferenceSettings.from_metadata(read_metadata(path), str(path), self.setting_defaults())
        if model.axes != "2d-in-plane":
            return super().default_scale(spacing_xyz)
        thick = detect_thick_axis(spacing_xyz)
        slice_axis = model.slice_axis if thick is None else thick.array_axis
        return moved_to_slice_axis(model.scales.default(), model.slice_axis, slice_axis)
