"""Trained networks applied by the tiling engine: the shared machinery of every learned patch or slice method.

A learned method is a subclass that declares its name, kind, scales and default patch/stride; its weights come from
``--checkpoint`` (a file or a catalog name) or, by default, from the first catalog model for the method and scale.
torch is imported only here and below, when a learned method actually runs.
"""
from pathlib import Path

from MedSRLib.errors import CheckpointError
from MedSRLib.grid.geometry import array_factors, format_scale
from .base import Method, MethodKind, RunSettings


class NetworkMethod(Method):
    kind = MethodKind.PATCH_3D
    # For 2D slice methods: the array axis whose slices the network sees (0 = axial slices of a (k, j, i) volume).
    slice_axis = 0
    # Peak activation memory per output voxel of a window, in float32 values, for the engine's memory estimate.
    activation_factor = 64.0

    def network_input(self, image, scale_xyz, settings: RunSettings):
        """The array the network is tiled over and its whole factor per array axis. A network that works on the
        output grid (DCSRN) overrides this to interpolate first and return factors (1, 1, 1)."""
        return image, tuple(int(round(f)) for f in array_factors(scale_xyz))

    def run(self, image, scale_xyz, spacing, settings: RunSettings):
        from MedSRLib.models.catalog import default_model_for, find_model
        from MedSRLib.models.checkpoints import check_compatible, load_model
        from MedSRLib.files import file_sha256
        from MedSRLib.engine.tiling import TilingOptions, run_tiled

        source = settings.checkpoint
        if source is None:
            entry = default_model_for(self.name, scale_xyz)
            if entry is None:
                raise CheckpointError(f"No trained model for '{self.name}' at scale {format_scale(scale_xyz)} "
                                      "ships with MedSR; train one (see Training/) and pass it with --checkpoint.")
            source = entry.name
        model, metadata = load_model(source)
        check_compatible(metadata, self.name, scale_xyz)
        network_image, factors = self.network_input(image, scale_xyz, settings)
        options = TilingOptions(
            patch=settings.patch or self.default_patch, stride=settings.stride or self.default_stride,
            blend=settings.blend, batch_size=settings.batch_size, device=settings.device,
            mode="2d" if self.kind == MethodKind.SLICE_2D else "3d", slice_axis=self.slice_axis,
            memory_budget_gb=settings.memory_budget_gb, activation_factor=self.activation_factor)
        result = run_tiled(model, network_image, factors, options, settings.progress, settings.cancel)
        sha256 = file_sha256(source) if Path(source).is_file() else find_model(source).sha256
        settings.provenance.update(checkpoint=str(source), checkpoint_sha256=sha256)
        return result

