"""``super_resolve``: the one entry point the CLI, the Slicer adapter and Python users share."""
import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np

from ._version import __version__
from .errors import InputError
from MedSRLib.grid.geometry import (ScaleLike, detect_thick_axis, format_scale, output_grid, parse_scale,
                                    target_spacing_scale)
from MedSRLib.engine.backends import check_backend
from MedSRLib.grid.intensity import Normaliser, cast_output
from .methods import RunSettings, get_method, list_methods
from MedSRLib.methods.base import DEFAULT_MEMORY_BUDGET_GB
from .progress import CancelCheck, ProgressCallback
from MedSRLib.io.volume import Volume, validate_volume
from MedSRLib.models.catalog import list_models


def super_resolve(volume: Volume, method: str = "bspline", scale: Optional[ScaleLike] = None, *,
                  target_spacing: Optional[float] = None,
                  patch: Optional[Sequence[int]] = None, stride: Optional[Sequence[int]] = None,
                  blend: str = "gaussian", batch_size: int = 4, device: str = "auto", backend: str = "auto",
                  checkpoint: Optional[str] = None, memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
                  normalisation: Optional[str] = None, percentiles: Optional[Tuple[float, float]] = None,
                  window: Optional[Tuple[float, float]] = None, output_dtype: str = "float32",
                  progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None,
                  check_only: bool = False, **method_options) -> Optional[Volume]:
    """Super-resolve ``volume`` by ``scale`` (one number, or one per (x, y, z) axis) with a registered method.

    ``scale`` defaults to the method's (2 on every axis; "auto" for per-scan methods; a 2D in-plane model's own factors
    on the slices of the scan's finely sampled plane); ``scale="auto"`` makes an anisotropic volume isotropic: the
    thick axis and its factor come from the spacing. ``target_spacing`` (mm), instead of a scale, brings every axis coarser than it to that spacing.
    ``normalisation`` / ``percentiles`` / ``window`` default to the model's (from its checkpoint; percentile 0.5–99.5
    for methods without one). ``backend`` runs a network's forward pass: ``"auto"`` (OpenVINO on the CPU where it is
    installed and pays off, else torch), ``"torch"`` or ``"openvino"`` (see :mod:`MedSRLib.engine.backends`).
    Returns a new Volume on the corner-aligned output grid (spacing / scale, size · scale, same direction); the input is
    never modified. Patch and stride are in input voxels. Raises a :class:`MedSRLib.errors.MedSRError` for bad input.
    ``check_only=True`` makes those checks (method, options, scale, checkpoint, memory) and returns None without running,
    so that a server can refuse a bad request before queueing it.
    """
    validate_volume(volume)
    chosen = get_method(method)
    chosen.check_options(method_options)
    if scale is None and target_spacing is None:
        scale = chosen.default_scale(volume.spacing, checkpoint)
    scale_xyz = requested_scale(volume, scale, target_spacing)
    grid = output_grid(volume.size, volume.spacing, volume.origin, volume.direction, scale_xyz)
    check_backend(backend)
    settings = RunSettings(patch=patch, stride=stride, blend=blend, batch_size=batch_size, device=device,
                           backend=backend, checkpoint=checkpoint, memory_budget_gb=memory_budget_gb,
                           progress=progress, cancel=cancel, options=method_options)
    chosen.check_scale(scale_xyz, settings)
    # The output (float32) and the normalised input copy must fit before any method-specific buffers.
    settings.require_memory(4 * (np.prod(grid.shape, dtype=float) + volume.array.size), "The output volume")
    if check_only:
        return None

    trained = chosen.normalisation(scale_xyz, settings)
    normaliser = Normaliser.fit(volume.array, normalisation or trained["mode"],
                                percentiles or tuple(trained.get("percentiles", (0.5, 99.5))),
                                window or trained.get("window"))
    result = chosen.run(normaliser.forward(volume.array), scale_xyz, volume.spacing, settings)
    if result.shape != grid.shape:
        raise RuntimeError(f"method {method} returned shape {result.shape}, expected {grid.shape}")

    metadata = dict(volume.metadata)
    metadata.update(method=method, scale=list(scale_xyz), target_spacing=target_spacing, backend=backend,
                    medsr_version=__version__, normalisation=normaliser.to_dict(), checkpoint_sha256=None)
    metadata.update(settings.provenance)
    array = cast_output(normaliser.inverse(result), output_dtype, volume.array.dtype)
    return Volume(array, grid.spacing, grid.origin, grid.direction, metadata)


def requested_scale(volume: Volume, scale: Optional[ScaleLike], target_spacing: Optional[float]):
    """The (x, y, z) scale a call asks for: ``scale`` (a value, or "auto"), ``target_spacing``, or 2 when neither is
    given (super_resolve first asks the method for its default)."""
    if target_spacing is not None:
        if scale is not None:
            raise InputError("Give scale=… or target_spacing=…, not both.")
        return parse_scale(target_spacing_scale(volume.spacing, target_spacing))
    if scale == "auto":
        return parse_scale(thick_axis_scale(volume))
    return parse_scale(2 if scale is None else scale)


def thick_axis_scale(volume: Volume):
    """The (x, y, z) scale that gives an anisotropic volume the in-plane spacing along its thick axis."""
    thick = detect_thick_axis(volume.spacing)
    if thick is None:
        raise InputError(f"The volume is isotropic (spacing {format_scale(volume.spacing)} mm), so there is no thick axis "
                         "to detect; give the scale explicitly.")
    return thick.scale()


def methods_and_models() -> dict:
    """Every registered method and every catalog model, as ``medsr methods --json`` prints them and a server lists them."""
    return {"methods": list_methods(), "models": [dataclasses.asdict(model) for model in list_models()]}
