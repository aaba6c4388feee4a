"""The through-plane mode: interpolate a thick-slice volume onto the output grid, then refine it with a 2D network
applied to the slices that cut through the thick axis, one or both orientations averaged.

Any same-size 2D slice network can run this way (per-scan SMORE / CLADE, pretrained through-plane models). The
network always sees slices whose rows run along the thick (degraded) axis: for an orientation whose thick axis would
be the columns, the slices are transposed on the way in and back on the way out.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from MedSRLib.errors import InputError
from MedSRLib.grid.geometry import array_factors
from MedSRLib.grid.spline import corner_aligned_resample
from MedSRLib.progress import CancelCheck, ProgressCallback
from .tiling import TilingOptions, run_tiled


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
        other_in_plane = next(axis for axis in in_plane_axes(thick_axis) if axis != slice_axis)
        model = network if thick_axis < other_in_plane else DegradedAxisFirst(network)
        whole_slice = tuple(interpolated.shape[axis] for axis in range(3) if axis != slice_axis)
        orientation_options = TilingOptions(**{**options.__dict__, "mode": "2d", "slice_axis": slice_axis,
                                               "patch": options.patch or whole_slice})

        def orientation_progress(done, total, index=index):
            if progress is not None:
                progress(int(1000 * (index + done / total) / len(slice_axes)), 1000)
        refined = run_tiled(model, interpolated, (1, 1, 1), orientation_options, orientation_progress, cancel)
        result = refined if result is None else result + refined
    return result / len(slice_axes) if len(slice_axes) > 1 else result


def interpolate_and_refine(network: torch.nn.Module, image: np.ndarray, scale_xyz: Sequence[float],
                           options: TilingOptions, orientations: int = 1, progress: Optional[ProgressCallback] = None,
                           cancel: Optional[CancelCheck] = None) -> np.ndarray:
    """The whole through-plane mode: cubic B-spline onto the corner-aligned output grid, then
    :func:`refine_through_plane` along the one scaled axis."""
    thick_axis = thick_axis_of(scale_xyz)
    interpolated = corner_aligned_resample(image, scale_xyz, order=3)
    return refine_through_plane(network, interpolated, thick_axis, options, orientations, progress, cancel)
