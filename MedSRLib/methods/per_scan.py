"""Per-scan learning for through-plane super-resolution: what SMORE and CLADE share.

A thick-slice scan has fine in-plane slices and coarse through-plane ones. The per-scan methods learn, from the scan
alone, a 2D network that sharpens through-plane slices that were first interpolated (cubic B-spline) onto the output
grid, then run it over those slices. This module holds the shared steps:

* :func:`plan_through_plane`: the thick axis and factor from the scale and spacing, with the bad-input messages;
* :func:`degraded_pairs` and :class:`PatchSampler`: training data from the in-plane slices;
* :func:`train_with_budget`: a time and / or iteration budget with progress and cancel;
* :func:`through_plane_inference`: the network over the through-plane slices, one or both orientations averaged;
* :func:`save_per_scan_model` / :func:`load_per_scan_model`: keep a per-scan model and reuse it on scans of the same
  protocol;
* :func:`run_per_scan`: a per-scan method's ``run``; each method supplies its network and training.

torch is imported here; the methods import this module only when they run, so registering them stays light.

Every 2D array handed to a network has the degraded (through-plane) axis first.
"""
import math
import platform
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from MedSRLib.models.checkpoints import CHECKPOINT_SUFFIX, check_compatible, load_model, save_checkpoint
from MedSRLib.grid.degradation import PROFILES, thicken_slices
from MedSRLib.errors import CheckpointError, InputError
from MedSRLib.files import file_sha256
from MedSRLib.grid.geometry import detect_thick_axis, format_scale, output_shape
from .base import RunSettings
from MedSRLib.grid.spline import corner_aligned_resample
from MedSRLib.progress import CancelCheck, ProgressCallback, report
from MedSRLib.engine.tiling import TilingOptions, run_tiled
from MedSRLib.engine.devices import resolve_device

MIN_THICK_SLICES = 8
MIN_IN_PLANE_SIZE = 16
# How far the thick-axis scale may differ from the spacing ratio (the output must restore the in-plane spacing).
SCALE_TOLERANCE = 0.05
AXIS_NAMES = "zyx"  # array axis k, j, i
# Progress is reported in thousandths of the whole job; training takes this share.
PROGRESS_TOTAL = 1000
TRAINING_SHARE = 0.85
# Patches are centred on voxels brighter than this (normalised intensity), so training does not see mostly air.
FOREGROUND_LEVEL = 0.1
MAX_PATCH_CENTRES = 500_000


@dataclass(frozen=True)
class ThroughPlane:
    """The thick array axis (0, 1, 2 = k, j, i), how many output voxels one thick slice spans along it, and the
    output spacing along it in mm."""
    axis: int
    factor: float
    output_spacing: float

    @property
    def in_plane_axes(self) -> Tuple[int, int]:
        return tuple(a for a in range(3) if a != self.axis)

    def scale_along(self, array_axis: int) -> Tuple[float, float, float]:
        """The (x, y, z) scale that stretches array axis ``array_axis`` by the factor."""
        values = [1.0, 1.0, 1.0]
        values[2 - array_axis] = self.factor
        return tuple(values)


def plan_through_plane(method_name: str, shape: Sequence[int], scale_xyz: Sequence[float],
                       spacing_xyz: Sequence[float], force_scale: bool = False) -> ThroughPlane:
    """The thick axis and factor, checked against the spacing unless ``force_scale``; InputError for unusable input."""
    scaled = [axis for axis in range(3) if scale_xyz[axis] > 1]
    if len(scaled) != 1:
        raise InputError(f"Method '{method_name}' super-resolves one thick axis; give a scale above 1 on that axis "
                         f"only (e.g. 1,1,4), not {format_scale(scale_xyz)}.")
    plan = ThroughPlane(axis=2 - scaled[0], factor=float(scale_xyz[scaled[0]]),
                        output_spacing=float(spacing_xyz[scaled[0]]) / float(scale_xyz[scaled[0]]))
    if not force_scale:
        thick = detect_thick_axis(spacing_xyz)
        spacing_text = format_scale(tuple(round(s, 3) for s in spacing_xyz))
        if thick is None:
            raise InputError(f"The volume is isotropic (spacing {spacing_text} mm), so its in-plane slices hold no "
                             f"finer detail for '{method_name}' to learn from; use bspline, or force_scale to "
                             "trust the scale instead of the spacing.")
        if thick.array_axis != plan.axis or abs(thick.factor / plan.factor - 1) > SCALE_TOLERANCE:
            raise InputError(f"Method '{method_name}' restores the thick axis to the in-plane spacing: for spacing "
                             f"{spacing_text} mm give the scale {format_scale(thick.scale())}, not "
                             f"{format_scale(scale_xyz)} (or force_scale to trust the scale).")
    slices = shape[plan.axis]
    if slices < MIN_THICK_SLICES:
        raise InputError(f"Method '{method_name}' learns from the in-plane slices and needs at least "
                         f"{MIN_THICK_SLICES} of them, but this volume has {slices} along {AXIS_NAMES[plan.axis]}.")
    in_plane = [shape[a] for a in plan.in_plane_axes]
    if min(in_plane) < max(MIN_IN_PLANE_SIZE, 3 * plan.factor):
        raise InputError(f"Method '{method_name}' needs in-plane slices of at least "
                         f"{max(MIN_IN_PLANE_SIZE, math.ceil(3 * plan.factor))} voxels a side, not "
                         f"{in_plane[0]}×{in_plane[1]}.")
    return plan


def degraded_pairs(image: np.ndarray, plan: ThroughPlane, profile: str = "box",
                   gap: float = 0.0) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Training pairs from the in-plane slices: (network input, target) stacks of 2D slices, one pair per in-plane axis.

    Each in-plane slice is degraded along one in-plane axis the way the scanner degraded the thick axis (slice profile
    ``profile`` of FWHM factor − gap, one sample every ``factor`` voxels, ``gap`` in output voxels), then interpolated
    back with the same cubic B-spline that puts the scan on the output grid. Stacks are (slices, rows, columns) with the
    degraded axis as rows, cropped to the rows the thick slices cover.
    """
    in_plane = np.moveaxis(image, plan.axis, 0)
    pairs = []
    for degraded_axis in (1, 2):
        thick = thicken_slices(in_plane, degraded_axis, plan.factor, profile, gap)
        interpolated = corner_aligned_resample(thick, plan.scale_along(degraded_axis), order=3)
        rows = interpolated.shape[degraded_axis]
        target = np.take(in_plane, np.arange(rows), axis=degraded_axis)
        if degraded_axis == 2:
            interpolated, target = interpolated.transpose(0, 2, 1), target.transpose(0, 2, 1)
        pairs.append((np.ascontiguousarray(interpolated), np.ascontiguousarray(target, dtype=np.float32)))
    return pairs


def through_plane_stack(volume: np.ndarray, plan: ThroughPlane, slice_axis: int) -> np.ndarray:
    """The slices of ``volume`` perpendicular to in-plane axis ``slice_axis`` as a (slices, rows, columns) view whose
    rows run along the thick axis."""
    stack = np.moveaxis(volume, slice_axis, 0)
    other_in_plane = next(a for a in plan.in_plane_axes if a != slice_axis)
    return stack if plan.axis < other_in_plane else stack.transpose(0, 2, 1)


class PatchSampler:
    """Random square patches from stacks of 2D slices, centred on foreground voxels (all voxels if there are none).

    The patch side is ``size``, or the smallest slice side if that is smaller. ``stacks`` is a list of tuples of
    equally shaped (slices, rows, columns) arrays — e.g. (input, target) pairs, or one-element tuples for unpaired data;
    :meth:`batch` returns one (B, 1, size, size) tensor per tuple element, all cut at the same places, randomly flipped
    along rows and columns.
    """

    def __init__(self, stacks: Sequence[Tuple[np.ndarray, ...]], size: int, seed: int = 0):
        self.stacks = [tuple(stack) for stack in stacks]
        self.size = min(size, *(min(arrays[0].shape[1:]) for arrays in self.stacks))
        self.rng = np.random.default_rng(seed)
        self.centres = []
        for arrays in self.stacks:
            centres = np.argwhere(arrays[-1] > FOREGROUND_LEVEL)
            if len(centres) == 0:
                centres = np.argwhere(np.ones(arrays[-1].shape, dtype=bool))
            if len(centres) > MAX_PATCH_CENTRES:
                centres = centres[self.rng.choice(len(centres), MAX_PATCH_CENTRES, replace=False)]
            self.centres.append(centres)
        counts = np.array([len(c) for c in self.centres], dtype=float)
        self.stack_weights = counts / counts.sum()

    def batch(self, count: int) -> List[torch.Tensor]:
        patches = [[] for _ in self.stacks[0]]
        for stack_index in self.rng.choice(len(self.stacks), count, p=self.stack_weights):
            arrays, centres = self.stacks[stack_index], self.centres[stack_index]
            slice_index, row, column = centres[self.rng.integers(len(centres))]
            _, rows, columns = arrays[0].shape
            top = int(np.clip(row - self.size // 2, 0, rows - self.size))
            left = int(np.clip(column - self.size // 2, 0, columns - self.size))
            flip_rows, flip_columns = self.rng.integers(2, size=2)
            for patch_list, array in zip(patches, arrays):
                patch = array[slice_index, top:top + self.size, left:left + self.size]
                patch_list.append(patch[::-1 if flip_rows else 1, ::-1 if flip_columns else 1])
        return [torch.from_numpy(np.stack(patch_list)[:, None].copy()) for patch_list in patches]


@dataclass(frozen=True)
class Budget:
    """Training stops at whichever limit comes first; at least one is set."""
    seconds: Optional[float] = None
    iterations: Optional[int] = None

    def used(self, iterations: int, seconds: float) -> float:
        """The fraction of the budget spent (≥ 1: stop)."""
        fractions = []
        if self.seconds is not None:
            fractions.append(seconds / self.seconds)
        if self.iterations is not None:
            fractions.append(iterations / self.iterations)
        return max(fractions)

    @classmethod
    def from_options(cls, options: dict, default_seconds: float) -> "Budget":
        seconds, iterations = options.get("budget_seconds"), options.get("iterations")
        if seconds is not None and not (isinstance(seconds, (int, float)) and seconds > 0):
            raise InputError(f"The training budget must be a positive number of seconds, not {seconds!r}.")
        if iterations is not None and not (isinstance(iterations, int) and iterations > 0):
            raise InputError(f"The number of training iterations must be a positive integer, not {iterations!r}.")
        if seconds is None and iterations is None:
            seconds = default_seconds
        return cls(seconds=None if seconds is None else float(seconds), iterations=iterations)

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "iterations": self.iterations}


@dataclass
class TrainingRecord:
    iterations: int
    seconds: float
    final_loss: float


@dataclass
class TrainedModel:
    """What a per-scan method's training returns: the network, how to rebuild it, and how it was trained."""
    network: torch.nn.Module
    architecture: str
    params: dict
    patch: int
    config: dict
    record: TrainingRecord


def train_with_budget(step: Callable[[float], float], budget: Budget, progress: Optional[ProgressCallback] = None,
                      cancel: Optional[CancelCheck] = None) -> TrainingRecord:
    """Call ``step(fraction of the budget spent)`` (one iteration; returns its loss) until the budget is spent.

    Progress goes 0 … PROGRESS_TOTAL; ``cancel`` is checked after every iteration.
    """
    started = time.perf_counter()
    iterations, losses = 0, []
    report(0, PROGRESS_TOTAL, progress, cancel)
    while True:
        spent = budget.used(iterations, time.perf_counter() - started)
        if spent >= 1:
            break
        losses.append(step(spent))
        iterations += 1
        report(min(PROGRESS_TOTAL, int(PROGRESS_TOTAL * spent)), PROGRESS_TOTAL, progress, cancel)
    # The mean over the last few iterations: one batch's loss is noisy.
    return TrainingRecord(iterations, time.perf_counter() - started, float(np.mean(losses[-20:])))


def cosine_learning_rate(optimizer: torch.optim.Optimizer, peak: float, spent: float) -> None:
    """Cosine decay from ``peak`` to zero over the budget."""
    for group in optimizer.param_groups:
        group["lr"] = peak * 0.5 * (1 + math.cos(math.pi * min(spent, 1.0)))


class DegradedAxisFirst(torch.nn.Module):
    """Runs a degraded-axis-first 2D network on slices whose degraded axis is their second one, by transposing."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.transpose(-1, -2)).transpose(-1, -2)


def through_plane_inference(network: torch.nn.Module, interpolated: np.ndarray, plan: ThroughPlane,
                            tiling: TilingOptions, both_orientations: bool,
                            progress: Optional[ProgressCallback] = None,
                            cancel: Optional[CancelCheck] = None) -> np.ndarray:
    """Run ``network`` over the through-plane slices of ``interpolated`` (the scan on the output grid).

    The slices perpendicular to the first in-plane axis are used, and with ``both_orientations`` also those
    perpendicular to the second, averaged. ``tiling.patch`` / ``stride`` are 2D, in the slices' array order; progress
    goes 0 … PROGRESS_TOTAL over all orientations.
    """
    orientations = plan.in_plane_axes if both_orientations else plan.in_plane_axes[:1]
    result = None
    for index, slice_axis in enumerate(orientations):
        other_in_plane = next(a for a in plan.in_plane_axes if a != slice_axis)
        model = network if plan.axis < other_in_plane else DegradedAxisFirst(network)
        whole_slice = tuple(interpolated.shape[a] for a in range(3) if a != slice_axis)
        options = TilingOptions(**{**tiling.__dict__, "mode": "2d", "slice_axis": slice_axis,
                                   "patch": tiling.patch or whole_slice})

        def orientation_progress(done, total, index=index):
            if progress is not None:
                progress(int(PROGRESS_TOTAL * (index + done / total) / len(orientations)), PROGRESS_TOTAL)
        refined = run_tiled(model, interpolated, (1, 1, 1), options, orientation_progress, cancel)
        result = refined if result is None else result + refined
    return result / len(orientations) if len(orientations) > 1 else result


def save_per_scan_model(path: str, method_name: str, trained: TrainedModel, plan: ThroughPlane,
                        scale_xyz: Sequence[float], budget: Budget, device: torch.device) -> dict:
    """Keep a per-scan model as a MedSR checkpoint, to reuse (``checkpoint=``) on scans of the same protocol."""
    metadata = {
        "method": method_name,
        "architecture": {"name": trained.architecture, "params": trained.params},
        "scales": [list(map(float, scale_xyz))],
        "axes": "2d-through-plane",
        "patch": [trained.patch, trained.patch],
        "normalisation": {"mode": "per-scan", "note": "the scan as super_resolve normalised it"},
        "training": {"data": ["per-scan: the in-plane slices of the super-resolved scan itself"],
                     "config": {"slice_factor": plan.factor, "thick_axis": AXIS_NAMES[plan.axis], **trained.config},
                     "budget": {**budget.to_dict(), "used_seconds": round(trained.record.seconds, 1),
                                "used_iterations": trained.record.iterations},
                     "hardware": f"{device.type} ({platform.processor() or platform.machine()})"},
        "metrics": {"final_training_loss": trained.record.final_loss},
    }
    return save_checkpoint(path, trained.network, metadata)


def load_per_scan_model(source: str, method_name: str, scale_xyz: Sequence[float]) -> Tuple[torch.nn.Module, dict]:
    """A saved per-scan model, checked to be for this method and scale."""
    network, metadata = load_model(source)
    check_compatible(metadata, method_name, scale_xyz)
    if metadata["axes"] != "2d-through-plane":
        raise CheckpointError(f"Checkpoint '{source}' is not a per-scan through-plane model.")
    return network, metadata


def run_per_scan(method, image: np.ndarray, scale_xyz: Sequence[float], spacing: Sequence[float],
                 settings: RunSettings) -> np.ndarray:
    """What every per-scan method's ``run`` does: check the input, train on the scan (or load ``settings.checkpoint``),
    optionally save the model, and refine the B-spline-interpolated through-plane slices.

    ``method`` is a registered Method (super_resolve has checked its options) with ``default_budget_seconds``,
    ``default_both_orientations``, ``default_patch`` / ``default_stride`` (2D, None: whole slices), ``activation_factor`` and
    ``train(image, interpolated, plan, options, budget, device, progress, cancel)`` returning a :class:`TrainedModel`
    (``interpolated``: the scan on the output grid).
    """
    options = dict(settings.options)
    plan = plan_through_plane(method.name, image.shape, scale_xyz, spacing, bool(options.get("force_scale")))
    if options.get("save_model") and not str(options["save_model"]).endswith(CHECKPOINT_SUFFIX):
        raise InputError(f"The per-scan model file '{options['save_model']}' must end in {CHECKPOINT_SUFFIX}.")
    # The interpolated volume, one refined orientation and the running sum, float32.
    settings.require_memory(3 * 4 * float(np.prod(output_shape(image.shape, scale_xyz))), f"Method '{method.name}'")
    device = resolve_device(settings.device)
    interpolated = corner_aligned_resample(image, scale_xyz, order=3)

    if settings.checkpoint is not None:
        network, _ = load_per_scan_model(settings.checkpoint, method.name, scale_xyz)
        settings.provenance.update(checkpoint=str(settings.checkpoint),
                                   checkpoint_sha256=file_sha256(settings.checkpoint))
        inference_start = 0
    else:
        budget = Budget.from_options(options, method.default_budget_seconds)
        torch.manual_seed(int(options.get("seed", 0)))
        inference_start = int(PROGRESS_TOTAL * TRAINING_SHARE)
        trained = method.train(image, interpolated, plan, options, budget, device,
                               _rescaled(settings.progress, 0, inference_start), settings.cancel)
        network = trained.network
        record = trained.record
        settings.provenance.update(per_scan_training={
            "iterations": record.iterations, "seconds": round(record.seconds, 1), "final_loss": record.final_loss,
            "device": device.type})
        if options.get("save_model"):
            stored = save_per_scan_model(str(options["save_model"]), method.name, trained, plan, scale_xyz, budget,
                                         device)
            settings.provenance.update(saved_model=str(options["save_model"]),
                                       saved_model_weights_sha256=stored["weights_sha256"])

    tiling = TilingOptions(patch=settings.patch or method.default_patch,
                           stride=settings.stride or method.default_stride, blend=settings.blend,
                           batch_size=settings.batch_size, device=device.type,
                           memory_budget_gb=settings.memory_budget_gb, activation_factor=method.activation_factor)
    both = bool(options.get("both_orientations", method.default_both_orientations))
    return through_plane_inference(network, interpolated, plan, tiling, both,
                                   _rescaled(settings.progress, inference_start, PROGRESS_TOTAL), settings.cancel)


def _rescaled(progress: Optional[ProgressCallback], start: int, end: int) -> Optional[ProgressCallback]:
    """A 0 … PROGRESS_TOTAL callback mapped onto [start, end] of the whole job's progress."""
    if progress is None:
        return None
    return lambda done, total: progress(start + (end - start) * done // max(total, 1), PROGRESS_TOTAL)


def check_profile(options: Dict[str, object]) -> str:
    """The ``profile`` option (default box), checked."""
    profile = options.get("profile", "box")
    if profile not in PROFILES:
        raise InputError(f"Option profile must be one of {', '.join(PROFILES)}, not {profile!r}.")
    return str(profile)
