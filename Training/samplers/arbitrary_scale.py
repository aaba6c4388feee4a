"""The arbitrary-scale sampler: one scale per batch, drawn from ``scale_range``; 3D patches or 2D slice patches.

The input is the exact area average of an HR window of ``data.hr_patch`` voxels (n = floor(hr_patch / f) voxels per
axis), the target its first round(n·f) HR voxels, and the network also receives where every target voxel lies:
``coordinates`` (B, ndim, *target) in the input's voxel indices (input voxel centres at the integers;
``MedSRLib.grid.geometry.output_coordinates``) and ``scale`` (B, ndim), the factors of the window axes — what
``MedSRLib.engine.tiling`` hands a coordinate-conditioned network at inference.
"""
from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from MedSRLib.grid.geometry import output_coordinates

from ..registry import SAMPLERS
from ..scaling import ScaleRange, window_axes, window_factors
from .degradation import AREA, add_input_noise, check_degradation, degrade, lr_length
from .windows import WindowSampler, batch_rng, item_rng


@SAMPLERS.register("arbitrary-scale")
class ArbitraryScaleSampler:
    def __init__(self, windows: WindowSampler, scale_range: ScaleRange, axes: Tuple[int, ...], batch: int,
                 noise: float, seed: int):
        for factors in (scale_range.low, scale_range.high):
            check_degradation(AREA, [factors[axis] for axis in axes], windows.size)
        self.windows, self.scale_range, self.axes = windows, scale_range, axes
        self.batch_size, self.noise, self.seed = batch, noise, seed

    @classmethod
    def from_config(cls, config: dict) -> "ArbitraryScaleSampler":
        scale_range = ScaleRange.from_config(config["scale_range"])
        window_factors(scale_range.high, config["axes"], config["slice_axis"])  # refuses a scaled slice axis
        axes = window_axes(config["axes"], config["slice_axis"])
        planes = None if config["axes"] == "3d" else config["data"]["planes"]
        data = config["data"]
        return cls(WindowSampler.from_config(config, planes), scale_range, axes, data["batch"],
                   data["augment"].get("noise", 0.0), config["seed"])

    @property
    def input_patch(self) -> Tuple[int, ...]:
        """The input window at the largest scale (it is larger at smaller ones)."""
        return tuple(lr_length(self.windows.size, self.scale_range.high[axis]) for axis in self.axes)

    def batch_factors(self, step: int, rank: int) -> Tuple[float, ...]:
        """This batch's factors of the window axes (one draw per batch, so its examples stack)."""
        factors = self.scale_range.draw(batch_rng(self.seed, step, rank))
        return tuple(factors[axis] for axis in self.axes)

    def batch(self, step: int, rank: int = 0) -> Dict[str, torch.Tensor]:
        """{"input", "target", "coordinates", "scale"}, the same for the same (seed, step, rank)."""
        factors = self.batch_factors(step, rank)
        inputs, targets = [], []
        for item in range(self.batch_size):
            rng = item_rng(self.seed, step, rank, item)
            degraded, target = degrade(self.windows.draw(rng), factors, AREA)
            inputs.append(add_input_noise(degraded, self.noise, rng))
            targets.append(target)
        coordinates = output_coordinates(targets[0].shape, factors).astype(np.float32)
        count = self.batch_size
        return {"input": torch.from_numpy(np.stack(inputs)[:, None]),
                "target": torch.from_numpy(np.stack(targets)[:, None]),
                "coordinates": torch.from_numpy(np.broadcast_to(coordinates, (count, *coordinates.shape)).copy()),
                "scale": torch.tensor([factors] * count, dtype=torch.float32)}
