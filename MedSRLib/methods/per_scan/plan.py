"""The plan of a per-scan run: the thick axis and factor, with the bad-input messages, the training budget, and the
options every per-scan method takes."""
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from MedSRLib.errors import InputError
from MedSRLib.grid.geometry import detect_thick_axis, format_scale
from ..options import MethodOption

MIN_THICK_SLICES = 8
MIN_IN_PLANE_SIZE = 16
# How far the thick-axis scale may go beyond the spacing ratio (rounding of a spacing read from a header).
SCALE_TOLERANCE = 0.05
AXIS_NAMES = "zyx"  # array axis k, j, i
# Progress is reported in thousandths of the whole job; training takes this share.
PROGRESS_TOTAL = 1000
TRAINING_SHARE = 0.85
# A time budget must leave training at least this share of it, or the run is refused before it trains.
MIN_TRAINING_SHARE = 0.1


def per_scan_options(both_orientations: bool, ships_models: bool = False) -> Tuple[MethodOption, ...]:
    """The options every per-scan method takes, beside its own; ``both_orientations`` is the method's default;
    ``ships_models``: the method's default is a shipped model, which ``from_scratch`` sets aside."""
    scratch = (MethodOption("from_scratch", "bool", "set the shipped model aside and train on this scan alone, within "
                            "the budget", default=False),) if ships_models else ()
    return scratch + (
        MethodOption("budget_seconds", "float", "time budget of the whole run: interpolation, training and "
                     "refinement; training gets what is left and, with an iteration budget too, stops at whichever "
                     "ends first", minimum=1, unit="s", label="Time budget"),
        MethodOption("iterations", "int", "training iterations", minimum=1),
        MethodOption("save_model", "path", "keep the model trained on this scan in this .safetensors file, to reuse "
                     "as the checkpoint"),
        MethodOption("force_scale", "bool", "trust the scale over the spacing: for an isotropic volume, or a "
                     "factor beyond the spacing ratio", default=False),
        MethodOption("both_orientations", "bool", "average the refinements of both through-plane orientations; a "
                     "reused model keeps its own setting unless this is given", default=both_orientations),
        MethodOption("fine_tune", "bool", "continue training the checkpoint (a saved per-scan model, or the "
                     "method's shipped model) on this scan within the budget before refining", default=False),
        MethodOption("seed", "int", "seed of the training's random draws", default=0, minimum=0),
    )


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
                             f"finer detail for '{method_name}' to learn from; use bspline, or force_scale=True to "
                             "trust the scale instead of the spacing.")
        if thick.array_axis != plan.axis:
            raise InputError(f"Method '{method_name}' super-resolves the thick axis: for spacing {spacing_text} mm "
                             f"give a scale such as {format_scale(thick.scale())}, not {format_scale(scale_xyz)} (or "
                             "force_scale=True to trust the scale).")
        # Any factor up to the spacing ratio is a real request (a target coarser than the in-plane spacing); beyond it
        # the output would be finer than anything in the scan to learn from.
        if plan.factor > thick.factor * (1 + SCALE_TOLERANCE):
            raise InputError(f"A scale of {plan.factor:g} along the thick axis goes beyond the in-plane spacing (spacing "
                             f"{spacing_text} mm: at most {format_scale(thick.scale())}); give at most that, or "
                             "force_scale=True to trust the scale.")
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


@dataclass(frozen=True)
class Budget:
    """Training stops at whichever limit comes first; at least one is set.

    A time budget bounds the whole run, not only the training: ``run_started`` is the run's start
    (``time.perf_counter()``) and ``reserved_seconds`` the estimated time of the work after training (the
    through-plane refinement), so the training loop gets what is left when it starts (:meth:`for_training_from`)."""
    seconds: Optional[float] = None
    iterations: Optional[int] = None
    run_started: Optional[float] = None
    reserved_seconds: float = 0.0

    def used(self, iterations: int, seconds: float) -> float:
        """The fraction of the budget spent (≥ 1: stop)."""
        fractions = []
        if self.seconds is not None:
            fractions.append(seconds / self.seconds)
        if self.iterations is not None:
            fractions.append(iterations / self.iterations)
        return max(fractions)

    @classmethod
    def from_options(cls, options: dict, default_seconds: Optional[float],
                     default_iterations: Optional[int] = None) -> "Budget":
        """The user's ``budget_seconds`` / ``iterations``; with neither, the method's default amount of work
        (``default_iterations``: the same result on a busy and an idle machine) or else its default time."""
        seconds, iterations = options.get("budget_seconds"), options.get("iterations")
        if seconds is None and iterations is None:
            if default_iterations is not None:
                iterations = default_iterations
            else:
                seconds = default_seconds
        return cls(seconds=None if seconds is None else float(seconds), iterations=iterations)

    def for_training_from(self, now: float) -> "Budget":
        """The budget of a training loop that starts at ``now`` (``time.perf_counter()``): a whole-run time budget
        less the time spent since the run started and the reserved time; InputError, naming the smallest budget that
        would do, when that leaves less than MIN_TRAINING_SHARE of the budget to train."""
        if self.seconds is None or self.run_started is None:
            return self
        other_work = now - self.run_started + self.reserved_seconds
        left = self.seconds - other_work
        if left < MIN_TRAINING_SHARE * self.seconds:
            smallest = math.ceil(other_work / (1 - MIN_TRAINING_SHARE))
            raise InputError(f"A time budget of {self.seconds:g} s leaves no time to train on this scan: interpolating "
                             f"it, preparing the training data and refining its through-plane slices take about "
                             f"{other_work:.1f} s here, so give budget_seconds=… of at least {smallest} s, or no time "
                             "budget.")
        return Budget(seconds=left, iterations=self.iterations)

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "iterations": self.iterations}

