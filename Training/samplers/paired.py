"""The paired sampler: (input, target) batches of 3D patches or of 2D slice patches from all configured planes."""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from MedSRLib.errors import InputError

from ..registry import SAMPLERS
from ..scaling import ScaleRange, array_factors, window_factors
from .degradation import (HR_GRID_DEGRADATIONS, add_input_noise, bspline_upsample, check_degradation, degrade,
                          lr_length, sr_length)
from .windows import WindowSampler, batch_rng, item_rng

THROUGH_PLANE = "2d-through-plane"


@SAMPLERS.register("paired")
class PairedSampler:
    """target = an augmented HR window, input = its degraded version (``data.degradation``) with optional noise.

    3D models ("3d") get cubes of ``data.hr_patch``; 2D models get squares of slices taken along every array axis in
    ``data.planes``, degraded by the factors of their window axes (``Training.scaling.window_factors``). With
    ``interpolate_input`` (through-plane models) the input is then B-spline interpolated onto the target's grid, and a
    ``scale_range`` draws one thick factor per batch from it (one model for a range of factors: the network sees the
    interpolated slices, whatever the factor); ``factors`` is then the config's ``scale``, the exported window's."""

    def __init__(self, windows: WindowSampler, factors: Sequence[float], batch: int, degradation: str, noise: float,
                 seed: int, interpolate_input: bool = False, scale_range: Optional[ScaleRange] = None):
        check_degradation(degradation, factors, windows.size)
        if scale_range is not None:
            if not interpolate_input:
                raise InputError("A scale_range with paired training needs a through-plane model (axes: "
                                 f"{THROUGH_PLANE}), whose input is interpolated onto the target's grid; a network that "
                                 "upsamples by a fixed factor trains at one scale.")
            for ends in (scale_range.low, scale_range.high):
                check_degradation(degradation, window_factors(ends, THROUGH_PLANE, 0), windows.size)
        self.windows, self.factors, self.batch_size = windows, tuple(factors), batch
        self.degradation, self.noise, self.seed = degradation, noise, seed
        self.interpolate_input, self.scale_range = interpolate_input, scale_range

    @classmethod
    def from_config(cls, config: dict) -> "PairedSampler":
        factors = window_factors(array_factors(config["scale"]), config["axes"], config["slice_axis"])
        planes = None if config["axes"] == "3d" else config["data"]["planes"]
        data = config["data"]
        scale_range = None if config["scale_range"] is None else ScaleRange.from_config(config["scale_range"])
        return cls(WindowSampler.from_config(config, planes), factors, data["batch"], data["degradation"],
                   data["augment"].get("noise", 0.0), config["seed"], config["axes"] == THROUGH_PLANE, scale_range)

    @property
    def input_patch(self) -> Tuple[int, ...]:
        """The network's input window: LR voxels, or HR voxels for an input on the HR grid."""
        if self.degradation in HR_GRID_DEGRADATIONS:
            return (self.windows.size,) * len(self.factors)
        lengths = [lr_length(self.windows.size, factor) for factor in self.factors]
        if self.interpolate_input:
            return tuple(sr_length(n, factor) for n, factor in zip(lengths, self.factors))
        return tuple(lengths)

    def batch_factors(self, step: int, rank: int = 0) -> Tuple[float, ...]:
        """This batch's window factors: ``factors``, or one draw from ``scale_range`` per batch (so its pairs stack)."""
        if self.scale_range is None:
            return self.factors
        return window_factors(self.scale_range.draw(batch_rng(self.seed, step, rank)), THROUGH_PLANE, 0)

    def pair(self, rng: np.random.Generator, factors: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
        degraded, target = degrade(self.windows.draw(rng), factors, self.degradation)
        degraded = add_input_noise(degraded, self.noise, rng)
        if self.interpolate_input:
            degraded = bspline_upsample(degraded, factors)
        return degraded, target

    def batch(self, step: int, rank: int = 0) -> Dict[str, torch.Tensor]:
        """{"input", "target"} as (B, 1, …) float32 tensors, the same for the same (seed, step, rank)."""
        factors = self.batch_factors(step, rank)
        pairs = [self.pair(item_rng(self.seed, step, rank, item), factors) for item in range(self.batch_size)]
        inputs, targets = zip(*pairs)
        return {"input": torch.from_numpy(np.stack(inputs)[:, None]),
                "target": torch.from_numpy(np.stack(targets)[:, None])}
