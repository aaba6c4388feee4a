"""The per-scan family: through-plane super-resolution learned from the scan itself (SMORE, CLADE).

A thick-slice scan has fine in-plane slices and coarse through-plane ones. A per-scan method learns, from the scan
alone, a 2D network that sharpens the through-plane slices of the scan interpolated (cubic B-spline) onto the output
grid, then runs it in the engine's through-plane mode (``engine.through_plane``). :class:`PerScanMethod` holds the
shared ``run`` — check the input, train within a budget (or reuse a saved model), optionally save the model, refine —
and each method supplies its network and training step (``train``). The training helpers are in
``per_scan.training`` (torch), imported only when a per-scan method runs.
"""
import time
from dataclasses import replace
from typing import Optional

import numpy as np

from MedSRLib.errors import InputError
from MedSRLib.grid.geometry import output_shape
from MedSRLib.progress import ProgressCallback
from ..base import Method, MethodKind, RunSettings
from .plan import PROGRESS_TOTAL, TRAINING_SHARE, Budget, ThroughPlane, per_scan_options, plan_through_plane


class PerScanMethod(Method):
    """Subclasses set ``default_iterations`` (a fixed amount of work) or ``default_budget_seconds``, ``options``
    (``plan.per_scan_options`` and their own), ``default_patch`` / ``default_stride`` (2D, None: whole slices),
    ``activation_factor``, and implement :meth:`train` (its ``options``: every declared option's value) and
    :meth:`untrained_network`.
    ``ships_models``: the method's default is its catalog model for the scale (trained on a data set, as CLADE's paper
    trains it), fine-tuned on the scan only when asked; without one in the catalog it trains on the scan from scratch.

    A time budget (``budget_seconds``, or the method's ``default_budget_seconds``) bounds the whole run: the
    interpolation and the training data come out of it, and before training starts the through-plane refinement is
    timed on batches of slices of the real size (``engine.through_plane.estimate_refinement_seconds``) and reserved,
    so training gets the rest, and stops before an iteration would end past it. A budget that would leave training
    less than a tenth of it is refused with the smallest budget that would do. On the shared 2-core machine (load
    average 3–4) whole SMORE runs took 0.89–1.08× budgets of 8–30 s (before: 1.74–1.97×) and the refinement
    0.4–1.4× its estimate (README, per-scan section). A method whose :meth:`untrained_network` is
    None (CLADE trained from scratch) reserves nothing, so its refinement comes on top. An iteration budget (SMORE's
    default) is a fixed amount of work and bounds only the training."""
    kind = MethodKind.PER_SCAN
    options = per_scan_options(both_orientations=False)
    default_iterations: Optional[int] = None
    default_budget_seconds = 300.0
    activation_factor = 64.0
    ships_models = False

    def default_scale(self, spacing_xyz, checkpoint=None):
        """"auto": the thick axis made isotropic, the job a per-scan method exists for."""
        return "auto"

    def train(self, image: np.ndarray, interpolated: np.ndarray, plan: ThroughPlane, options: dict, budget: Budget,
              device, progress: Optional[ProgressCallback], cancel, initial=None):
        """Train the refinement network on ``image`` (``interpolated``: the scan on the output grid), starting from
        ``initial`` ((network, architecture ``{name, params}``) of a checkpoint to fine-tune) or from scratch; return
        a ``per_scan.training.TrainedModel``."""
        raise NotImplementedError

    def untrained_network(self, options: dict):
        """The network :meth:`train` builds when it starts from scratch (its weights untrained), for timing the
        refinement before training; None where a method does not give it, and then a time budget reserves nothing
        for the refinement (it still covers everything before it)."""
        return None

    def starting_model(self, scale_xyz, settings: RunSettings, options: dict) -> Optional[str]:
        """``checkpoint``, else the catalog's model for this scale when the method ships models and ``from_scratch``
        is not asked for, else None (train on the scan alone)."""
        from MedSRLib.engine.devices import device_type
        from MedSRLib.models.catalog import default_model_for
        if settings.checkpoint is not None or not self.ships_models or options.get("from_scratch"):
            return settings.checkpoint
        entry = default_model_for(self.name, scale_xyz, axes="2d-through-plane", device=device_type(settings.device))
        return None if entry is None else entry.name

    def check_training_options(self, source: Optional[str], options: dict) -> None:
        """One sentence for options that contradict each other, before any work."""
        if options.get("from_scratch") and source is not None:
            raise InputError("from_scratch=True trains on the scan alone and takes no checkpoint=….")
        if options["fine_tune"] and source is None:
            raise InputError(f"fine_tune=True continues training a model on the scan; give '{self.name}' a "
                             "checkpoint=… (a saved per-scan model) to fine-tune.")
        if source is not None and not options["fine_tune"]:
            given = [f"{name}=…" for name in ("iterations", "budget_seconds", "save_model") if options[name]]
            if given:
                raise InputError(f"{' and '.join(given)} only apply to training on the scan; the model "
                                 f"'{source}' is used as it is unless fine_tune=True.")

    def run(self, image, scale_xyz, spacing, settings: RunSettings):
        import torch

        from MedSRLib.engine.devices import resolve_device
        from MedSRLib.engine.through_plane import estimate_refinement_seconds, refine_through_plane
        from MedSRLib.files import file_sha256
        from MedSRLib.grid.spline import corner_aligned_resample
        from MedSRLib.models.checkpoints import CHECKPOINT_SUFFIX, checkpoint_path
        from .training import load_per_scan_model, save_per_scan_model

        started = time.perf_counter()  # a time budget counts from here
        options = self.option_values(settings.options)
        plan = plan_through_plane(self.name, image.shape, scale_xyz, spacing, options["force_scale"])
        if options["save_model"] and not str(options["save_model"]).endswith(CHECKPOINT_SUFFIX):
            raise InputError(f"The per-scan model file '{options['save_model']}' must end in {CHECKPOINT_SUFFIX}.")
        source = self.starting_model(scale_xyz, settings, options)
        self.check_training_options(source, options)
        # The interpolated volume, one refined orientation and the running sum, float32.
        settings.require_memory(3 * 4 * float(np.prod(output_shape(image.shape, scale_xyz))), f"Method '{self.name}'")
        device = resolve_device(settings.device)
        interpolated = corner_aligned_resample(image, scale_xyz, order=3)
        # Orientations averaged: the option given, else what a reused model was saved with, else the method's default.
        both = settings.options.get("both_orientations")
        network = None
        if source is not None:
            network, saved, architecture = load_per_scan_model(source, self.name, scale_xyz)
            if both is None and saved.orientations is not None:
                both = saved.orientations == 2
            path = checkpoint_path(source)
            settings.provenance.update(checkpoint=str(source), checkpoint_sha256=file_sha256(path))
        orientations = 2 if (options["both_orientations"] if both is None else both) else 1

        tiling = self._tiling_options(settings, device.type)
        inference_start, refinement_estimate = 0, None
        if network is None or options["fine_tune"]:
            budget = Budget.from_options(options, self.default_budget_seconds, self.default_iterations)
            if budget.seconds is not None:
                timed = network if network is not None else self.untrained_network(options)
                if timed is not None:
                    refinement_estimate = estimate_refinement_seconds(timed, interpolated, plan.axis, tiling,
                                                                      orientations)
                budget = replace(budget, run_started=started, reserved_seconds=refinement_estimate or 0.0)
            torch.manual_seed(options["seed"])
            inference_start = int(PROGRESS_TOTAL * TRAINING_SHARE)
            trained = self.train(image, interpolated, plan, options, budget, device,
                                 _rescaled(settings.progress, 0, inference_start), settings.cancel,
                                 initial=None if network is None else (network, architecture))
            network = trained.network
            record = trained.record
            settings.provenance.update(per_scan_training={
                "iterations": record.iterations, "seconds": round(record.seconds, 1), "final_loss": record.final_loss,
                "device": device.type, "fine_tuned": source is not None})
            settings.provenance.update(trained.provenance)
            if options["save_model"]:
                stored = save_per_scan_model(str(options["save_model"]), self.name, trained, plan, scale_xyz, budget,
                                             device, orientations)
                settings.provenance.update(saved_model=str(options["save_model"]),
                                           saved_model_weights_sha256=stored["weights_sha256"])

        refinement_started = time.perf_counter()
        result = refine_through_plane(network.to(device), interpolated, plan.axis, tiling, orientations,
                                      _rescaled(settings.progress, inference_start, PROGRESS_TOTAL), settings.cancel)
        if refinement_estimate is not None:
            settings.provenance["per_scan_training"].update(
                refinement_seconds_estimated=round(refinement_estimate, 2),
                refinement_seconds=round(time.perf_counter() - refinement_started, 2))
        return result

    def _tiling_options(self, settings: RunSettings, device: str, slice_axis: int = 0, whole_slice=None):
        from MedSRLib.engine.tiling import TilingOptions
        return TilingOptions(patch=settings.patch or self.default_patch or whole_slice,
                             stride=settings.stride or self.default_stride, blend=settings.blend,
                             batch_size=settings.batch_size, device=device, mode="2d", slice_axis=slice_axis,
                             memory_budget_gb=settings.memory_budget_gb, activation_factor=self.activation_factor)

    def tiled_pass(self, shape, scale_xyz, settings: RunSettings):
        from MedSRLib.engine.through_plane import in_plane_axes, thick_axis_of
        # Slices through the thick axis of the volume interpolated onto the output grid (whole slices by default).
        out_shape = output_shape(shape, scale_xyz)
        slice_axis = in_plane_axes(thick_axis_of(scale_xyz))[0]
        whole_slice = tuple(size for axis, size in enumerate(out_shape) if axis != slice_axis)
        return out_shape, (1, 1, 1), self._tiling_options(settings, settings.device, slice_axis, whole_slice)


def _rescaled(progress: Optional[ProgressCallback], start: int, end: int) -> Optional[ProgressCallback]:
    """A 0 … PROGRESS_TOTAL callback mapped onto [start, end] of the whole job's progress."""
    if progress is None:
        return None
    return lambda done, total: progress(start + (end - start) * done // max(total, 1), PROGRESS_TOTAL)
