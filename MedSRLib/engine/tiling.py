"""The tiling engine: runs any torch module over a volume window by window and stitches the outputs.

A window is a box of the (k, j, i) input array. In ``"3d"`` mode the model receives (B, 1, D, H, W) windows; in ``"2d"``
mode it receives (B, 1, H, W) tiles of the slices along ``slice_axis`` (any array axis; internally a 3D window one
voxel thick). Patch and stride count input voxels; the last window of each axis sits flush with the end, so every
voxel is covered. An axis shorter than the patch is padded at its far end by repeating the edge voxel ("replicate"
padding).

How the model is called (``conditioning``):
- ``"none"``: ``model(x)`` returns the window enlarged by whole per-axis ``factors``; the output window of input window
  [a, a + p) is [a·f, (a + p)·f), and padding is cropped from the output.
- ``"coordinates"`` (arbitrary-scale networks): ``factors`` may be any floats ≥ 1. The output is the corner-aligned
  grid of ``geometry.output_shape``; every window has the same output size P = floor(p·f) per axis (the whole axis
  when one window covers it), starting at the first output voxel whose centre lies in the window (the last window
  flush with the end). The model is called ``model(x, coordinates, scale)``: ``coordinates`` (B, ndim, *output
  window) holds each output voxel centre's position in the window's input-voxel indices (input voxel centres are
  the integers; ``geometry.output_positions``), ``scale`` (B, ndim) the factors of the window axes.

Blending of overlapping windows:
- ``"gaussian"``: weighted mean with a Gaussian importance map, sigma = patch/8 per axis in output voxels;
- ``"average"``: plain mean;
- ``"crop-margin"``: each output voxel comes from exactly one window, the one whose centre region it lies in; a
  window's margins of (patch − stride)/2 are dropped except at the volume borders. A fully convolutional network whose
  receptive-field radius fits in that margin gives exactly its whole-volume output.

Both weight maps are separable and the windows form a grid, so the sum of weights is an outer product of three 1D
sums: the only full-size buffer is the output itself.
"""
import contextlib
import itertools
import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from MedSRLib.errors import CheckpointError, InputError, MemoryBudgetError
from MedSRLib.grid.geometry import output_coordinates
from MedSRLib.progress import CancelCheck, ProgressCallback, report
from .backends import check_backend, inference_forward
from .devices import autocast_dtype, memory_format, resolve_device, weights_in_layout

logger = logging.getLogger(__name__)

BLENDS = ("gaussian", "average", "crop-margin")
MODES = ("3d", "2d")
CONDITIONINGS = ("none", "coordinates")
GAUSSIAN_SIGMA_FRACTION = 0.125
BYTES_PER_VOXEL = 4  # float32

IntOrTriple = Union[int, Sequence[int]]
FactorsLike = Union[float, Sequence[float]]


@dataclass
class TilingOptions:
    """How to cut, batch, blend and place the work.

    ``patch`` and ``stride`` are one int or one value per window axis (3 in 3D mode; in 2D mode 2, for the in-plane
    axes in array order); ``stride=None`` means a 25 % overlap. ``memory_budget_gb=None`` disables the memory check.
    ``activation_factor`` is the model's peak activation memory per output voxel of a window, in float32 values,
    used only by :func:`estimate_memory`; the default fits a 16-feature RRDB ×2 on the CPU (about 90 measured).
    ``backend`` runs the forward pass (:mod:`MedSRLib.engine.backends`); ``model_key`` (the checkpoint's sha256) names
    a converted model in the backends' disk cache.
    """
    patch: IntOrTriple = 64
    stride: Optional[IntOrTriple] = None
    blend: str = "gaussian"
    batch_size: int = 4
    device: str = "auto"
    mode: str = "3d"
    slice_axis: int = 0
    autocast: bool = True
    conditioning: str = "none"
    memory_budget_gb: Optional[float] = None
    activation_factor: float = 96.0
    backend: str = "torch"
    model_key: Optional[str] = None


@dataclass(frozen=True)
class _Grid:
    """Window layout: input windows in input voxels of the (possibly padded) input, and where each one's output goes."""
    shape: Tuple[int, int, int]
    padded_shape: Tuple[int, int, int]
    patch: Tuple[int, int, int]
    factors: Tuple[float, float, float]
    starts: Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]
    out_patch: Tuple[int, int, int]
    out_starts: Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]
    out_shape: Tuple[int, int, int]
    padded_out_shape: Tuple[int, int, int]  # the accumulator: out_shape, plus the output of the padding
    slice_axis: Optional[int]  # set in 2D mode

    @property
    def window_count(self) -> int:
        return math.prod(len(starts) for starts in self.starts)

    @property
    def window_axes(self) -> Tuple[int, ...]:
        """The array axes the model sees (all three in 3D mode, the slice's two in 2D mode)."""
        return tuple(axis for axis in range(3) if axis != self.slice_axis)

    def windows(self) -> Iterator[Tuple[int, int, int]]:
        """Per-axis window indices, the last axis varying fastest."""
        return itertools.product(*(range(len(starts)) for starts in self.starts))

    def input_slices(self, window: Tuple[int, int, int]) -> Tuple[slice, ...]:
        return tuple(slice(starts[n], starts[n] + p) for starts, n, p in zip(self.starts, window, self.patch))

    def output_slices(self, window: Tuple[int, int, int]) -> Tuple[slice, ...]:
        return tuple(slice(starts[n], starts[n] + p) for starts, n, p in zip(self.out_starts, window, self.out_patch))

    def coordinates(self, window: Tuple[int, int, int]) -> torch.Tensor:
        """(ndim, *output window): each output voxel centre's position in the input window's voxel indices."""
        axes = self.window_axes
        positions = output_coordinates([self.out_patch[a] for a in axes], [self.factors[a] for a in axes],
                                       [self.out_starts[a][window[a]] for a in axes])
        window_starts = np.array([self.starts[a][window[a]] for a in axes], dtype=np.float64)
        return torch.from_numpy(positions - window_starts.reshape(-1, *([1] * len(axes)))).float()


def _per_axis(value: IntOrTriple, count: int, what: str) -> Tuple[int, ...]:
    values = (value,) * count if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != count or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in values):
        raise InputError(f"The {what} must be one positive integer or {count} positive integers, not {value!r}.")
    return tuple(int(v) for v in values)


def _window_starts(size: int, patch: int, stride: int) -> Tuple[int, ...]:
    if size <= patch:
        return (0,)
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return tuple(starts)


def _output_layout(size: int, patch: int, factor: float, starts: Sequence[int], conditioned: bool):
    """(output window size, output window starts, output size, accumulator size) of one axis."""
    if not conditioned:
        factor = int(factor)
        padded = max(size, patch)
        return patch * factor, tuple(start * factor for start in starts), size * factor, padded * factor
    out_size = max(1, int(round(size * factor)))
    if len(starts) == 1:
        return out_size, (0,), out_size, out_size
    out_patch = int(math.floor(patch * factor + 1e-9))
    # The first output voxel whose centre lies at or after the window's first input voxel's outer face.
    out_starts = [min(int(math.ceil(start * factor - 0.5 - 1e-9)), out_size - out_patch) for start in starts[:-1]]
    out_starts.append(out_size - out_patch)
    if any(following > start + out_patch for start, following in zip(out_starts, out_starts[1:])):
        raise InputError(f"Windows of {patch} voxels with this stride leave gaps in the ×{factor:g} output; use a "
                         "smaller stride (more overlap) or a larger patch.")
    return out_patch, tuple(out_starts), out_size, out_size


def _make_grid(shape: Sequence[int], factors: FactorsLike, options: TilingOptions) -> _Grid:
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"The tiling engine needs a non-empty 3D array, got shape {tuple(shape)}.")
    if options.conditioning not in CONDITIONINGS:
        raise InputError(f"Unknown network conditioning '{options.conditioning}'; choose one of "
                         f"{', '.join(CONDITIONINGS)}.")
    conditioned = options.conditioning == "coordinates"
    factors = _factors(factors, conditioned)
    if options.blend not in BLENDS:
        raise InputError(f"Unknown blending '{options.blend}'; choose one of {', '.join(BLENDS)}.")
    if options.mode not in MODES:
        raise InputError(f"Unknown tiling mode '{options.mode}'; choose '3d' or '2d'.")
    check_backend(options.backend)
    if not isinstance(options.batch_size, int) or options.batch_size < 1:
        raise InputError(f"The batch size must be a positive integer, not {options.batch_size!r}.")
    window_axes = 3
    slice_axis = None
    if options.mode == "2d":
        if options.slice_axis not in (0, 1, 2):
            raise InputError(f"The slice axis must be 0, 1 or 2 (array axes k, j, i), not {options.slice_axis!r}.")
        slice_axis = options.slice_axis
        if factors[slice_axis] != 1:
            raise InputError(f"A 2D slice model cannot scale its slice axis {slice_axis}; its factor must be 1, not "
                             f"{factors[slice_axis]:g}.")
        window_axes = 2
    patch = _per_axis(options.patch, window_axes, "patch size")
    stride = _per_axis(options.stride if options.stride is not None else [p - p // 4 for p in patch],
                       window_axes, "stride")
    if any(s > p for s, p in zip(stride, patch)):
        raise InputError(f"The stride {stride} must not exceed the patch size {patch}, or voxels would be skipped.")
    if slice_axis is not None:
        patch = patch[:slice_axis] + (1,) + patch[slice_axis:]
        stride = stride[:slice_axis] + (1,) + stride[slice_axis:]
    shape = tuple(int(s) for s in shape)
    if conditioned:
        # A coordinate-conditioned network takes windows of any size: a volume smaller than the patch is one
        # window of its own size, not an edge-padded one whose padding would shift what the voxels near that edge see.
        patch = tuple(min(p, s) for p, s in zip(patch, shape))
        stride = tuple(min(t, p) for t, p in zip(stride, patch))
    starts = tuple(_window_starts(s, p, t) for s, p, t in zip(shape, patch, stride))
    layouts = [_output_layout(s, p, f, axis_starts, conditioned)
               for s, p, f, axis_starts in zip(shape, patch, factors, starts)]
    return _Grid(shape=shape, padded_shape=tuple(max(s, p) for s, p in zip(shape, patch)), patch=patch,
                 factors=factors, starts=starts, out_patch=tuple(layout[0] for layout in layouts),
                 out_starts=tuple(layout[1] for layout in layouts), out_shape=tuple(layout[2] for layout in layouts),
                 padded_out_shape=tuple(layout[3] for layout in layouts), slice_axis=slice_axis)


def _factors(factors: FactorsLike, conditioned: bool) -> Tuple[float, float, float]:
    values = (factors,) * 3 if np.isscalar(factors) else tuple(factors)
    if len(values) != 3 or not all(np.isfinite(v) and v >= 1 for v in values):
        raise InputError(f"The scale factors must be one number or 3 numbers of at least 1, not {factors!r}.")
    if not conditioned and any(float(v) != int(v) for v in values):
        raise InputError(f"A network without coordinate input scales by whole factors, not {tuple(values)}; use an "
                         "arbitrary-scale model for other factors.")
    return tuple(float(v) if conditioned else int(v) for v in values)


def estimate_memory(image_shape: Sequence[int], factors: FactorsLike, options: TilingOptions) -> int:
    """Bytes :func:`run_tiled` needs at its peak: input copy, output accumulator, one batch of input and output
    windows (plus the window weight map and, for coordinate-conditioned networks, the coordinates) and
    ``activation_factor`` values per output voxel of the batch."""
    grid = _make_grid(image_shape, factors, options)
    batch = min(options.batch_size, grid.window_count)
    in_window, out_window = math.prod(grid.patch), math.prod(grid.out_patch)
    coordinates = len(grid.window_axes) if options.conditioning == "coordinates" else 0
    values = (math.prod(grid.padded_shape) + math.prod(grid.padded_out_shape) + sum(grid.padded_out_shape)
              + out_window + batch * (in_window + (2 + coordinates) * out_window)
              + batch * out_window * options.activation_factor)
    return int(values * BYTES_PER_VOXEL)


def computed_output_voxels(image_shape: Sequence[int], factors: FactorsLike, options: TilingOptions) -> int:
    """Output voxels the network computes over all windows (overlaps and padding included): the work behind a run,
    for throughput in FLOP/s."""
    grid = _make_grid(image_shape, factors, options)
    return grid.window_count * math.prod(grid.out_patch)


def _gaussian_profile(length: int) -> torch.Tensor:
    sigma = GAUSSIAN_SIGMA_FRACTION * length
    offsets = torch.arange(length, dtype=torch.float64) - (length - 1) / 2
    return torch.exp(-0.5 * (offsets / sigma) ** 2)


class _Stitcher:
    """Output accumulator and blending; ``move_to`` lets the out-of-memory fallback continue on another device."""

    def __init__(self, grid: _Grid, blend: str, device: torch.device):
        self.grid = grid
        self.blend = blend
        self.sum = torch.zeros(grid.padded_out_shape, dtype=torch.float32, device=device)
        if blend == "crop-margin":
            self.keep = [self._crop_bounds(axis) for axis in range(3)]
            return
        profiles = [_gaussian_profile(n) if blend == "gaussian" else torch.ones(n, dtype=torch.float64)
                    for n in grid.out_patch]
        self.window_weight = (profiles[0][:, None, None] * profiles[1][None, :, None]
                              * profiles[2][None, None, :]).float().to(device)
        self.axis_totals = []
        for axis, profile in enumerate(profiles):
            total = torch.zeros(grid.padded_out_shape[axis], dtype=torch.float64)
            for start in grid.out_starts[axis]:
                total[start:start + profile.numel()] += profile
            self.axis_totals.append(total.float())

    def _crop_bounds(self, axis: int) -> List[Tuple[int, int]]:
        """Per window along ``axis``: the output range it owns, relative to the window; borders meet mid-overlap."""
        starts, patch = self.grid.out_starts[axis], self.grid.out_patch[axis]
        borders = ([0] + [(start + patch + following) // 2 for start, following in zip(starts, starts[1:])]
                   + [self.grid.padded_out_shape[axis]])
        return [(low - start, high - start) for start, low, high in zip(starts, borders, borders[1:])]

    def move_to(self, device: torch.device) -> None:
        self.sum = self.sum.to(device)
        if self.blend != "crop-margin":
            self.window_weight = self.window_weight.to(device)

    def add(self, window: Tuple[int, int, int], prediction: torch.Tensor) -> None:
        out_slices = self.grid.output_slices(window)
        if self.blend == "crop-margin":
            owned = tuple(slice(*keep[n]) for keep, n in zip(self.keep, window))
            target = tuple(slice(o.start + k.start, o.start + k.stop) for o, k in zip(out_slices, owned))
            self.sum[target] = prediction[owned]
        else:
            self.sum[out_slices].addcmul_(prediction, self.window_weight)

    def result(self) -> np.ndarray:
        output = self.sum
        if self.blend != "crop-margin":
            totals = [total.to(output.device) for total in self.axis_totals]
            output /= totals[0][:, None, None]
            output /= totals[1][None, :, None]
            output /= totals[2][None, None, :]
        output = output[tuple(slice(0, n) for n in self.grid.out_shape)]
        return np.ascontiguousarray(output.cpu().numpy())


@dataclass
class _Placement:
    """Where the model runs, where outputs are stitched, and how many windows go per batch."""
    compute: torch.device
    stitch: torch.device
    batch_size: int

    def degrade(self) -> bool:
        """Next fallback after an out-of-memory error: halve the batch, then stitch on the CPU, then run on the CPU.
        Returns False when nothing is left to try."""
        cpu = torch.device("cpu")
        if self.batch_size > 1:
            self.batch_size //= 2
        elif self.stitch.type != "cpu":
            self.stitch = cpu
        elif self.compute.type != "cpu":
            self.compute = cpu
        else:
            return False
        return True


def _predict(forward: Callable[..., torch.Tensor], padded: torch.Tensor, windows: Sequence[Tuple[int, int, int]],
             grid: _Grid, device: torch.device, autocast: bool, conditioned: bool) -> torch.Tensor:
    batch = torch.stack([padded[grid.input_slices(window)] for window in windows]).unsqueeze(1)
    if grid.slice_axis is not None:
        batch = batch.squeeze(2 + grid.slice_axis)
    layout = memory_format(device, len(grid.window_axes))
    inputs = [batch.to(device, memory_format=layout) if layout else batch.to(device)]
    if conditioned:
        inputs.append(torch.stack([grid.coordinates(window) for window in windows]).to(device))
        inputs.append(torch.tensor([[grid.factors[axis] for axis in grid.window_axes]] * len(windows),
                                   dtype=torch.float32, device=device))
    reduced_precision = autocast_dtype(device) if autocast else None
    with torch.autocast(device.type, reduced_precision) if reduced_precision else contextlib.nullcontext():
        predictions = forward(*inputs)
    if grid.slice_axis is not None:
        predictions = predictions.unsqueeze(2 + grid.slice_axis)
    expected = (len(windows), 1, *grid.out_patch)
    if tuple(predictions.shape) != expected:
        raise CheckpointError(f"The network returned shape {tuple(predictions.shape)} for input "
                              f"{tuple(batch.shape)} instead of {expected}; check that the model's scale matches the "
                              "requested scale.")
    return predictions[:, 0].float()


def run_tiled(model: torch.nn.Module, image: np.ndarray, factors: FactorsLike,
              options: Optional[TilingOptions] = None, progress: Optional[ProgressCallback] = None,
              cancel: Optional[CancelCheck] = None) -> np.ndarray:
    """Run ``model`` over ``image`` (float (k, j, i)) window by window; return the float32 output of shape
    ``image.shape * factors`` (per array axis; rounded for a coordinate-conditioned network, as
    ``geometry.output_shape``). The model is put in eval mode and moved to the chosen device.
    Progress counts windows; cancelling between batches raises :class:`~MedSRLib.errors.Cancelled`."""
    options = options or TilingOptions()
    image = np.ascontiguousarray(image, dtype=np.float32)
    grid = _make_grid(image.shape, factors, options)
    if options.memory_budget_gb is not None:
        needed = estimate_memory(image.shape, factors, options)
        if needed > options.memory_budget_gb * 2 ** 30:
            raise MemoryBudgetError(
                f"Tiled inference needs about {needed / 2 ** 30:.1f} GiB, above the {options.memory_budget_gb:g} GiB "
                "memory budget; lower the batch size or patch size, crop the volume, or raise the budget.")
    device = resolve_device(options.device)
    placement = _Placement(compute=device, stitch=device, batch_size=options.batch_size)
    padding = [(0, p - s) for s, p in zip(grid.shape, grid.padded_shape)]
    padded = torch.from_numpy(np.pad(image, padding, mode="edge") if any(p for _, p in padding) else image)
    windows = list(grid.windows())
    model.eval().to(device)
    conditioned = options.conditioning == "coordinates"
    window_shape = tuple(grid.patch[axis] for axis in grid.window_axes)
    forward = inference_forward(model, options.backend, device, window_shape, math.prod(grid.out_shape),
                                options.model_key, conditioned)
    report(0, len(windows), progress, cancel)
    done = 0
    # The layout changes outside inference mode: restored weights must stay usable for autograd (a validator's network).
    with weights_in_layout(model, memory_format(device, len(grid.window_axes))), torch.inference_mode():
        try:
            stitcher = _Stitcher(grid, options.blend, placement.stitch)
        except torch.cuda.OutOfMemoryError:  # the output does not fit beside the model: stitch in host memory
            placement.stitch = torch.device("cpu")
            stitcher = _Stitcher(grid, options.blend, placement.stitch)
        while done < len(windows):
            batch = windows[done:done + placement.batch_size]
            try:
                predictions = _predict(forward, padded, batch, grid, placement.compute, options.autocast, conditioned)
                predictions = predictions.to(placement.stitch)
            except torch.cuda.OutOfMemoryError:
                predictions = None
            if predictions is None:  # handled outside the except block so the failed batch's tensors are freed
                _recover_from_out_of_memory(placement, stitcher, model)
                continue
            for window, prediction in zip(batch, predictions):
                stitcher.add(window, prediction)
            done += len(batch)
            report(done, len(windows), progress, cancel)
        return stitcher.result()


def _recover_from_out_of_memory(placement: _Placement, stitcher: _Stitcher, model: torch.nn.Module) -> None:
    if placement.compute.type == "cuda":
        torch.cuda.empty_cache()
    if not placement.degrade():
        raise MemoryBudgetError("Ran out of memory even with one window per batch on the CPU; use a smaller patch "
                                "size or crop the volume.")
    logger.warning("Out of memory; retrying with batch size %d, model on %s, stitching on %s.",
                   placement.batch_size, placement.compute, placement.stitch)
    stitcher.move_to(placement.stitch)
    with torch.inference_mode(False):  # parameters must stay normal tensors, usable for training afterwards
        model.to(placement.compute)
