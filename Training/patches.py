"""Training pairs cut from real volumes on the fly: foreground-aware sampling, augmentation, MedSRLib degradation.

Every patch is drawn from a random generator seeded by (seed, step, rank, item), so a run resumed at step s sees
exactly the batches an uninterrupted run would have seen, and DDP ranks see different patches.
"""
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import torch

from MedSRLib.evaluation.datasets import dataset_path, get_dataset
from MedSRLib.grid.degradation import block_mean, downsample_linear, downsample_nearest, kspace_truncate
from MedSRLib.errors import InputError
from MedSRLib.grid.intensity import Normaliser
from MedSRLib.io.volume_files import read_volume

DEGRADATIONS = {"block-mean": block_mean, "linear": downsample_linear, "nearest": downsample_nearest}
HR_GRID_DEGRADATIONS = ("kspace",)
# Foreground voxels kept per volume as patch-centre candidates (a random subset; enough to cover every region).
MAX_CENTRE_CANDIDATES = 200_000


def resolve_volume_path(name_or_path: str) -> Path:
    """A dataset name from MedSRLib.data (must not be held out) or a volume file path."""
    if Path(name_or_path).exists():
        return Path(name_or_path)
    if get_dataset(name_or_path).split == "heldout":
        raise InputError(f"Dataset '{name_or_path}' is held out for evaluation and must never be used for training.")
    return dataset_path(name_or_path)


def load_normalised(name_or_path: str) -> np.ndarray:
    """The volume as float32 in [0, 1]: clipped to its 0.5 / 99.5 percentiles, like the DATA.md protocol."""
    array = read_volume(resolve_volume_path(name_or_path)).array
    return Normaliser.fit(array, clip=True).forward(array)


def _bias_field(shape: Sequence[int], strength: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field exp(Σ c·x^a·y^b·z^c) over the patch, terms up to degree 2, |c| ≤ strength."""
    axes = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij")
    log_field = np.zeros(shape, dtype=np.float32)
    for powers in [(1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0), (0, 2, 0), (0, 0, 2), (1, 1, 0), (1, 0, 1), (0, 1, 1)]:
        term = np.ones(shape, dtype=np.float32)
        for axis, power in zip(axes, powers):
            if power:
                term = term * axis ** power
        log_field += rng.uniform(-strength, strength) * term
    return np.exp(log_field)


class PatchSampler:
    """Yields (input, target) batches: target = an augmented HR patch, input = its degraded version (LR grid, or the
    HR grid for ``kspace``)."""

    def __init__(self, volumes: List[np.ndarray], scale: int, hr_patch: int, batch: int, degradation: str,
                 foreground_threshold: float, foreground_fraction: float, augment: dict, seed: int):
        if degradation not in DEGRADATIONS and degradation not in HR_GRID_DEGRADATIONS:
            raise InputError(f"Unknown training degradation '{degradation}'; choose one of "
                             f"{', '.join([*DEGRADATIONS, *HR_GRID_DEGRADATIONS])}.")
        if hr_patch % scale:
            raise InputError(f"The HR patch size {hr_patch} must be a multiple of the scale {scale}.")
        for volume in volumes:
            if min(volume.shape) < hr_patch:
                raise InputError(f"A training volume of shape {volume.shape} is smaller than the {hr_patch}³ patch.")
        self.volumes = volumes
        self.scale, self.hr_patch, self.batch_size = scale, hr_patch, batch
        self.degradation = degradation
        self.foreground_fraction = foreground_fraction
        self.augment = augment
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.centres = []
        for volume in volumes:
            candidates = np.flatnonzero(volume > foreground_threshold)
            if candidates.size > MAX_CENTRE_CANDIDATES:
                candidates = rng.choice(candidates, MAX_CENTRE_CANDIDATES, replace=False)
            self.centres.append(candidates)

    @classmethod
    def from_config(cls, config: dict) -> "PatchSampler":
        data = config["data"]
        volumes = [load_normalised(name) for name in data["train"]]
        return cls(volumes, int(config["scale"]), data["hr_patch"], data["batch"], data["degradation"],
                   data["foreground_threshold"], data["foreground_fraction"], data["augment"], config["seed"])

    @property
    def input_on_hr_grid(self) -> bool:
        return self.degradation in HR_GRID_DEGRADATIONS

    def pair(self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        index = rng.integers(len(self.volumes))
        volume, centres = self.volumes[index], self.centres[index]
        if centres.size and rng.random() < self.foreground_fraction:
            centre = np.unravel_index(centres[rng.integers(centres.size)], volume.shape)
        else:
            centre = [rng.integers(n) for n in volume.shape]
        starts = [int(np.clip(c - self.hr_patch // 2, 0, n - self.hr_patch)) for c, n in zip(centre, volume.shape)]
        hr = volume[tuple(slice(s, s + self.hr_patch) for s in starts)]
        hr = self._augment(hr, rng)
        if self.degradation == "kspace":
            degraded = kspace_truncate(hr, (self.scale,) * 3).astype(np.float32)
        else:
            degraded = DEGRADATIONS[self.degradation](hr, (self.scale,) * 3)
        noise = self.augment.get("noise", 0.0)
        if noise:
            degraded = degraded + rng.normal(0, rng.uniform(0, noise), degraded.shape).astype(np.float32)
        return degraded.astype(np.float32), hr

    def _augment(self, hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        settings = self.augment
        if settings.get("flip"):
            hr = hr[tuple(slice(None, None, -1) if rng.random() < 0.5 else slice(None) for _ in range(3))]
        hr = np.array(hr, dtype=np.float32)
        if settings.get("bias_field"):
            hr *= _bias_field(hr.shape, settings["bias_field"], rng)
        if settings.get("gamma"):
            hr = np.clip(hr, 0, None) ** np.float32(np.exp(rng.uniform(*np.log(settings["gamma"]))))
        if settings.get("intensity_scale"):
            hr *= np.float32(rng.uniform(*settings["intensity_scale"]))
        return hr

    def batch(self, step: int, rank: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) as (B, 1, …) float32 tensors, the same for the same (seed, step, rank)."""
        pairs = [self.pair(np.random.default_rng([self.seed, step, rank, item])) for item in range(self.batch_size)]
        inputs, targets = zip(*pairs)
        return (torch.from_numpy(np.stack(inputs)[:, None]), torch.from_numpy(np.stack(targets)[:, None]))
