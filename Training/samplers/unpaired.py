"""The unpaired sampler of CLADE-style cycle training: patches of two domains cut from thick-slice acquisitions that are
simulated from the training volumes; no high-resolution ground truth is used.

Each training volume is made into a thick-slice scan along the array axis the config's ``scale`` scales
(``thicken_slices`` with ``data.thick_profile``) and cubic-B-spline-interpolated back to isotropic voxels, as a real
anisotropic scan is before a through-plane model runs on it. Domain X (low resolution) is patches of the interpolated
volume's through-plane slices, in both orientations, rows along the thick axis (as the engine hands slices to a
through-plane network); domain Y (high resolution) is patches of the acquired in-plane slices, randomly transposed.
"""
from typing import Dict, Tuple

import numpy as np
import torch

from MedSRLib.grid.degradation import thicken_slices
from MedSRLib.grid.spline import corner_aligned_resample

from ..registry import SAMPLERS
from ..scaling import array_factors, thick_axis
from .windows import WindowSampler, item_rng, load_normalised


def simulate_thick_slices(volume: np.ndarray, axis: int, factor: float, profile: str) -> Tuple[np.ndarray, np.ndarray]:
    """(acquired, interpolated), both with the thick axis first: ``volume`` acquired in slices ``factor`` voxels apart
    along array ``axis``, and that acquisition interpolated back to isotropic voxels on the corner-aligned grid."""
    acquired = thicken_slices(volume, axis, factor, profile)
    scale_xyz = [1.0, 1.0, 1.0]
    scale_xyz[2 - axis] = factor
    interpolated = corner_aligned_resample(acquired, scale_xyz, order=3)
    return np.moveaxis(acquired, axis, 0), np.moveaxis(interpolated, axis, 0)


@SAMPLERS.register("unpaired-thick-slices")
class UnpairedThickSliceSampler:
    def __init__(self, low_resolution: WindowSampler, high_resolution: WindowSampler, batch: int, seed: int):
        self.low_resolution, self.high_resolution = low_resolution, high_resolution
        self.batch_size, self.seed = batch, seed

    @classmethod
    def from_config(cls, config: dict) -> "UnpairedThickSliceSampler":
        axis, factor = thick_axis(array_factors(config["scale"]))
        simulated = [simulate_thick_slices(load_normalised(name), axis, factor, config["data"]["thick_profile"])
                     for name in config["data"]["train"]]
        acquired, interpolated = (list(volumes) for volumes in zip(*simulated))
        return cls(WindowSampler.from_config(config, planes=[1, 2], volumes=interpolated),
                   WindowSampler.from_config(config, planes=[0], volumes=acquired, seed_offset=1),
                   config["data"]["batch"], config["seed"])

    @property
    def input_patch(self) -> Tuple[int, int]:
        return (self.low_resolution.size,) * 2

    def batch(self, step: int, rank: int = 0) -> Dict[str, torch.Tensor]:
        """{"x": low-resolution-plane patches, "y": high-resolution-plane patches}, (B, 1, size, size) each."""
        x, y = [], []
        for item in range(self.batch_size):
            x.append(self.low_resolution.draw(item_rng(self.seed, step, rank, item)))
            rng = item_rng(self.seed, step, rank, self.batch_size + item)
            patch = self.high_resolution.draw(rng)
            y.append(patch.T if rng.random() < 0.5 else patch)
        return {"x": torch.from_numpy(np.stack(x)[:, None]), "y": torch.from_numpy(np.stack(y)[:, None])}
