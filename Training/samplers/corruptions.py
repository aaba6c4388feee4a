"""The corruption sampler of feature-network pre-training: HR training patches, each corrupted by a random one of
:data:`CORRUPTIONS` and labelled with its index.

The corruptions are the artefacts a super-resolution output has and a perceptual loss should see: none, two Gaussian
blurs, the block-mean ×2 degradation interpolated back, k-space truncation ×2 with its ringing, Gaussian noise.
"""
from typing import Callable, Dict

import numpy as np
import torch
from scipy import ndimage

from MedSRLib.grid.degradation import block_mean, kspace_truncate
from MedSRLib.grid.spline import corner_aligned_resample

from ..registry import SAMPLERS
from .windows import WindowSampler, batch_rng, item_rng


def _block_mean_interpolated(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return corner_aligned_resample(block_mean(patch, (2, 2, 2)), (2, 2, 2), order=1)


CORRUPTIONS: Dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "none": lambda patch, rng: patch,
    "gaussian-blur-0.7": lambda patch, rng: ndimage.gaussian_filter(patch, 0.7, mode="mirror"),
    "gaussian-blur-1.5": lambda patch, rng: ndimage.gaussian_filter(patch, 1.5, mode="mirror"),
    "block-mean-x2-linear": _block_mean_interpolated,
    "kspace-x2": lambda patch, rng: kspace_truncate(patch, (2, 2, 2)),
    "gaussian-noise": lambda patch, rng: patch + rng.normal(0, rng.uniform(0.02, 0.06), patch.shape),
}


@SAMPLERS.register("corruptions")
class CorruptionSampler:
    def __init__(self, windows: WindowSampler, batch: int, seed: int):
        self.windows, self.batch_size, self.seed = windows, batch, seed

    @classmethod
    def from_config(cls, config: dict, volumes=None, seed_offset: int = 0) -> "CorruptionSampler":
        """Patches of ``data.train`` (or of ``volumes``, normalised arrays, with the seed moved by ``seed_offset``)."""
        windows = WindowSampler.from_config(config, planes=None, volumes=volumes, seed_offset=seed_offset)
        return cls(windows, config["data"]["batch"], config["seed"] + seed_offset)

    @property
    def input_patch(self):
        return (self.windows.size,) * 3

    def batch(self, step: int, rank: int = 0) -> Dict[str, torch.Tensor]:
        """{"image": (B, 1, p, p, p) corrupted patches, "label": (B,) corruption indices}."""
        patches = [self.windows.draw(item_rng(self.seed, step, rank, item)) for item in range(self.batch_size)]
        rng = batch_rng(self.seed, step, rank)
        labels = rng.integers(len(CORRUPTIONS), size=len(patches))
        corruptions = list(CORRUPTIONS.values())
        images = [corruptions[label](patch, rng).astype(np.float32) for patch, label in zip(patches, labels)]
        return {"image": torch.from_numpy(np.stack(images)[:, None]), "label": torch.from_numpy(labels)}
