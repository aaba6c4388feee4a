"""The through-plane mode: interpolate a thick-slice volume onto the output grid, then refine it with a 2D network
applied to the slices that cut through the thick axis, one or both orientations averaged.

Any same-size 2D slice network can run this way (per-scan SMORE / CLADE, pretrained through-plane models). The
network always sees slices whose rows run along the thick (degraded) axis: for an orientation whose thick axis would
be the columns, the slices are transposed on the way in and back on the way out.
"""
import time
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from MedSRLib.errors import InputError
from MedSRLib.grid.geometry import array_factors
from MedSRLib.grid.spline import corner_aligned_resample
from MedSRLib.progress import CancelCheck, ProgressCallback
from .backends import inference_forward
from .devices import resolve_device
from .tiling import TilingOptions, computed_output_voxels, run_tiled


# estimate_refinement_seconds times batches for this long, and at least this many (never more than the whole pass
# has); their median resists a moment when other processes take the CPU.
TIMING_SECONDS = 0.25
MIN_TIMED_BATCHES = 3


class DegradedAxisFirst(torch.nn.Module):
    """Runs a degraded-axis-first 2D network on slices whose degraded axis is their second one, by transposing."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.transpose(-1, -2)).transpose(-1, -2)


def in_plane_axes(thick_axis: int) -> Tuple[int, int]:
    """The two array axes other than the thick one, in array order."""
    return tuple(axis for axis in range(3) if axis != thick_axis)


def thick_axis_of(scale_xyz: Sequence[float]) -> int:
    """The array axis of the one scale factor above 1; InputError unless exactly one axis is scaled."""
    scaled = [axis for axis, factor in enumerate(array_factors(scale_xyz)) if factor > 1]
    if len(scaled) != 1:
        raise InputError(f"Through-plane super-resolution scales one thick axis; give a scale above 1 on that axis only "
                         f"(e.g. 1,1,4), not {'×'.join(f'{v:g}' for v in scale_xyz)}.")
    return scaled[0]


def refine_through_plane(network: torch.nn.Module, interpolated: np.ndarray, thick_axis: int, options: TilingOptions,
                         orientations: int = 1, progress: Optional[ProgressCallback] = None,
                         cancel: Optional[CancelCheck] = None) -> np.ndarray:
    """Run a same-size 2D ``network`` over the slices of ``interpolated`` (already on the output grid) that contain the
    thick axis: the slices along the first in-plane axis, and with ``orientations=2`` also along the second, averaged.

    ``options.patch`` / ``stride`` are 2D in the slices' array order (None: whole slices); ``mode`` and
    ``slice_axis`` are set here. Progress goes 0 … 1000 over all orientations.
    """
    if orientations not in (1, 2):
        raise InputError(f"Through-plane refinement averages 1 or 2 orientations, not {orientations!r}.")
    slice_axes = in_plane_axes(thick_axis)[:orientations]
    result = None
    for index, slice_axis in enumerate(slice_axes):
        model, orientation_options = _orientation(network, interpolated.shape, thick_axis, slice_axis, options)

        def orientation_progress(done, total, index=index):
            if progress is not None:
                progress(int(1000 * (index + done / total) / len(slice_axes)), 1000)
        refined = run_tiled(model, interpolated, (1, 1, 1), orientation_options, orientation_progress, cancel)
        result = refined if result is None else result + refined
    return result / len(slice_axes) if len(slice_axes) > 1 else result


def _orientation(network: torch.nn.Module, shape: Sequence[int], thick_axis: int, slice_axis: int,
                 options: TilingOptions) -> Tuple[torch.nn.Module, TilingOptions]:
    """The network and tiling that refine the slices along ``slice_axis`` (whole slices unless a patch is given)."""
    other_in_plane = next(axis for axis in in_plane_axes(thick_axis) if axis != slice_axis)
    model = network if thick_axis < other_in_plane else DegradedAxisFirst(network)
    whole_slice = tuple(shape[axis] for axis in range(3) if axis != slice_axis)
    return model, TilingOptions(**{**options.__dict__, "mode": "2d", "slice_axis": slice_axis,
                                   "patch": options.patch or whole_slice})


def estimate_refinement_seconds(network: torch.nn.Module, interpolated: np.ndarray, thick_axis: int,
                                options: TilingOptions, orientations: int = 1) -> float:
    """Seconds :func:`refine_through_plane` will take with the same arguments: the network's time on one batch of the
    first orientation's windows (its first slices, cut to the patch; run by the engine's backend once untimed, then
    timed MIN_TIMED_BATCHES times or for TIMING_SECONDS: the median), scaled by the output voxels the windows of
    every orientation compute; batching and stitching cost little beside the network. The weights do not matter, so
    an untrained network of the same architecture gives the estimate before training (its measured accuracy: see
    the per-scan methods' docstring)."""
    slice_axes = in_plane_axes(thick_axis)[:orientations]
    total_voxels = sum(computed_output_voxels(interpolated.shape, (1, 1, 1),
                                              _orientation(network, interpolated.shape, thick_axis, axis, options)[1])
                       for axis in slice_axes)
    model, first = _orientation(network, interpolated.shape, thick_axis, slice_axes[0], options)
    slices = np.moveaxis(interpolated, slice_axes[0], 0)
    window = np.minimum(slices.shape[1:], np.broadcast_to(first.patch, 2))
    count = min(first.batch_size, len(slices))
    device = resolve_device(first.device)
    batch = torch.from_numpy(np.ascontiguousarray(slices[:count, :window[0], :window[1]], dtype=np.float32))
    batch = batch[:, None].to(device)
    # What the engine will run (the backend chosen as it chooses it), once untimed: a first call pays one-off set-up
    # (a backend's import, kernels for the batch shape) that the pass after training no longer pays.
    forward = inference_forward(model.eval().to(device), first.backend, device, tuple(int(n) for n in window),
                                int(np.prod(interpolated.shape)), first.model_key)
    with torch.inference_mode():
        forward(batch)
        seconds, started = [], time.perf_counter()
        while not seconds or (len(seconds) * batch.numel() < total_voxels and (
                len(seconds) < MIN_TIMED_BATCHES or time.perf_counter() - started < TIMING_SECONDS)):
            batch_started = time.perf_counter()
            forward(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - batch_started)
    return float(np.median(seconds)) * total_voxels / batch.numel()


def interpolate_and_refine(network: torch.nn.Module, image: np.ndarray, scale_xyz: Sequence[float],
                           options: TilingOptions, orientations: int = 1, progress: Optional[ProgressCallback] = None,
                           cancel: Optional[CancelCheck] = None) -> np.ndarray:
    """The whole through-plane mode: cubic B-spline onto the corner-aligned output grid, then
    :func:`refine_through_plane` along the one scaled axis."""
    thick_axis = thick_axis_of(scale_xyz)
    interpolated = corner_aligned_resample(image, scale_xyz, order=3)
    return refine_through_plane(network, interpolated, thick_axis, options, orientations, progress, cancel)
