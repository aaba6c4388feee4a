"""Training helpers of the per-scan methods (torch): data from the scan's own slices, the budgeted loop, and saving /
reusing a per-scan model.

Every 2D array handed to a network has the degraded (through-plane) axis first.
"""
import math
import platform
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from MedSRLib.errors import CheckpointError
from MedSRLib.grid.degradation import thicken_slices
from MedSRLib.grid.spline import corner_aligned_resample
from MedSRLib.models.checkpoints import load_model, save_checkpoint
from MedSRLib.models.inference_settings import InferenceSettings
from MedSRLib.progress import CancelCheck, ProgressCallback, report
from .plan import AXIS_NAMES, PROGRESS_TOTAL, Budget, ThroughPlane

# Patches are centred on voxels brighter than this (normalised intensity), so training does not see mostly air.
FOREGROUND_LEVEL = 0.1
MAX_PATCH_CENTRES = 500_000


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


@dataclass
class TrainingRecord:
    iterations: int
    seconds: float
    final_loss: float


@dataclass
class TrainedModel:
    """What a per-scan method's training returns: the network, how to rebuild it, and how it was trained;
    ``provenance``: what the training found out about the scan (e.g. SMORE's slice profile), for the output's
    metadata."""
    network: torch.nn.Module
    architecture: str
    params: dict
    patch: int
    config: dict
    record: TrainingRecord
    provenance: dict = field(default_factory=dict)


def starting_params(initial, architecture: str, method_label: str, default_params: dict) -> dict:
    """The network parameters a per-scan training builds with: ``initial``'s (a (network, architecture) to fine-tune,
    which must be the method's own architecture) or the method's defaults."""
    if initial is None:
        return dict(default_params)
    if initial[1]["name"] != architecture:
        raise CheckpointError(f"{method_label} fine-tunes its own network ({architecture}), not a "
                              f"{initial[1]['name']} model.")
    return dict(initial[1]["params"])


def train_with_budget(step: Callable[[float], float], budget: Budget, progress: Optional[ProgressCallback] = None,
                      cancel: Optional[CancelCheck] = None) -> TrainingRecord:
    """Call ``step(fraction of the budget spent)`` (one iteration; returns its loss) until the budget is spent.

    Progress goes 0 … PROGRESS_TOTAL; ``cancel`` is checked after every iteration. A time budget for the whole run
    leaves the loop what the run has not spent or reserved (``Budget.for_training_from``), and the loop stops
    when one more iteration, as long as the last one, would end past it.
    """
    started = time.perf_counter()
    budget = budget.for_training_from(started)
    iterations, losses, step_seconds = 0, [], 0.0
    report(0, PROGRESS_TOTAL, progress, cancel)
    while True:
        step_started = time.perf_counter()
        if budget.used(iterations + 1, step_started - started + step_seconds) > 1:
            break
        spent = budget.used(iterations, step_started - started)
        losses.append(step(spent))
        iterations += 1
        step_seconds = time.perf_counter() - step_started
        report(min(PROGRESS_TOTAL, int(PROGRESS_TOTAL * spent)), PROGRESS_TOTAL, progress, cancel)
    # The mean over the last few iterations: one batch's loss is noisy.
    return TrainingRecord(iterations, time.perf_counter() - started, float(np.mean(losses[-20:])))


def cosine_learning_rate(optimizer: torch.optim.Optimizer, peak: float, spent: float) -> None:
    """Cosine decay from ``peak`` to zero over the budget."""
    for group in optimizer.param_groups:
        group["lr"] = peak * 0.5 * (1 + math.cos(math.pi * min(spent, 1.0)))


def save_per_scan_model(path: str, method_name: str, trained: TrainedModel, plan: ThroughPlane,
                        scale_xyz: Sequence[float], budget: Budget, device: torch.device, orientations: int) -> dict:
    """Keep a per-scan model as a MedSR checkpoint, to reuse (``checkpoint=``) on scans of the same protocol."""
    metadata = {
        "method": method_name,
        "architecture": {"name": trained.architecture, "params": trained.params},
        "scales": [list(map(float, scale_xyz))],
        "axes": "2d-through-plane",
        "orientations": orientations,
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


def load_per_scan_model(source: str, method_name: str,
                        scale_xyz: Sequence[float]) -> Tuple[torch.nn.Module, InferenceSettings, dict]:
    """A saved per-scan model or a method's shipped through-plane model (a file or a catalog name), checked to be for
    this method and scale: (network, inference settings, architecture ``{name, params}``)."""
    network, metadata = load_model(source)
    settings = InferenceSettings.from_metadata(metadata, str(source)).for_run(method_name, scale_xyz)
    if settings.axes != "2d-through-plane":
        raise CheckpointError(f"Checkpoint '{source}' is not a through-plane model.")
    return network, settings, metadata["architecture"]
