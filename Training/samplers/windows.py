"""Random high-resolution windows of the training volumes: what every sampler cuts its examples from.

Volumes are dataset names from ``MedSRLib.evaluation.datasets`` (held-out ones are refused) or volume files, normalised
like the evaluation protocol (docs/protocol.md). A window is a 3D patch, or a 2D patch of a slice along one of the
configured planes; it is centred on a foreground voxel with probability ``foreground_fraction`` and then augmented.
Every draw takes its numbers from the random generator it is given, which the samplers seed by (seed, step, rank,
item): a run resumed at step s sees exactly the batches an uninterrupted run would have seen, and DDP ranks see
different ones.
"""
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from MedSRLib.errors import InputError
from MedSRLib.evaluation.datasets import dataset_path, get_dataset
from MedSRLib.grid.intensity import Normaliser
from MedSRLib.io.volume_files import read_volume

from .augmentation import augment

# Foreground voxels kept per volume as window-centre candidates (a random subset; enough to cover every region).
MAX_CENTRE_CANDIDATES = 200_000


def resolve_volume_path(name_or_path: str) -> Path:
    """A dataset name (must not be held out) or a volume file path."""
    if Path(name_or_path).exists():
        return Path(name_or_path)
    if get_dataset(name_or_path).split == "heldout":
        raise InputError(f"Dataset '{name_or_path}' is held out for evaluation and must never be used for training.")
    return dataset_path(name_or_path)


def load_normalised(name_or_path: str) -> np.ndarray:
    """The volume as float32 in [0, 1]: clipped to its 0.5 / 99.5 percentiles, like the evaluation protocol."""
    array = read_volume(resolve_volume_path(name_or_path)).array
    return Normaliser.fit(array, clip=True).forward(array)


def item_rng(seed: int, step: int, rank: int, item: int) -> np.random.Generator:
    """The random generator of one example of one batch."""
    return np.random.default_rng([seed, step, rank, item])


def batch_rng(seed: int, step: int, rank: int) -> np.random.Generator:
    """The random generator of what a whole batch shares (its scale, its labels), independent of its examples'."""
    return np.random.default_rng([seed, step, rank])


class WindowSampler:
    """Augmented windows of ``size`` voxels a side: 3D patches when ``planes`` is None, else 2D patches of slices
    along a random one of ``planes`` (array axes), whose rows and columns are the slice's remaining axes in order."""

    def __init__(self, volumes: List[np.ndarray], size: int, planes: Optional[Sequence[int]],
                 foreground_threshold: float, foreground_fraction: float, augment_settings: dict, seed: int):
        if planes is not None and (not planes or not set(planes) <= {0, 1, 2}):
            raise InputError(f"Slice planes must be array axes 0, 1 or 2, not {planes!r}.")
        spanned = range(3) if planes is None else {axis for plane in planes for axis in range(3) if axis != plane}
        for volume in volumes:
            if min(volume.shape[axis] for axis in spanned) < size:
                raise InputError(f"A training volume of shape {volume.shape} is smaller than the {size}-voxel window.")
        self.volumes, self.size, self.planes = volumes, size, None if planes is None else list(planes)
        self.foreground_fraction = foreground_fraction
        self.augment_settings = augment_settings
        rng = np.random.default_rng(seed)
        self.centres = []
        for volume in volumes:
            candidates = np.flatnonzero(volume > foreground_threshold)
            if candidates.size > MAX_CENTRE_CANDIDATES:
                candidates = rng.choice(candidates, MAX_CENTRE_CANDIDATES, replace=False)
            self.centres.append(candidates)

    @classmethod
    def from_config(cls, config: dict, planes: Optional[Sequence[int]], volumes: Optional[List[np.ndarray]] = None,
                    seed_offset: int = 0) -> "WindowSampler":
        """Windows of ``data.hr_patch`` voxels of ``volumes`` (default: the normalised ``data.train`` volumes)."""
        data = config["data"]
        if volumes is None:
            volumes = [load_normalised(name) for name in data["train"]]
        return cls(volumes, data["hr_patch"], planes, data["foreground_threshold"], data["foreground_fraction"],
                   data["augment"], config["seed"] + seed_offset)

    def locate(self, rng: np.random.Generator) -> Tuple[int, tuple]:
        """(volume index, the index of a random window into that volume): a 2D window's index takes one slice of
        its plane, so the window has the slice's two remaining axes."""
        plane = None if self.planes is None else self.planes[rng.integers(len(self.planes))]
        index = rng.integers(len(self.volumes))
        volume, centres = self.volumes[index], self.centres[index]
        if centres.size and rng.random() < self.foreground_fraction:
            centre = np.unravel_index(centres[rng.integers(centres.size)], volume.shape)
        else:
            centre = [rng.integers(n) for n in volume.shape]
        shape = [1 if axis == plane else self.size for axis in range(3)]
        starts = [int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip(centre, shape, volume.shape)]
        return index, tuple(start if axis == plane else slice(start, start + s)
                            for axis, (start, s) in enumerate(zip(starts, shape)))

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One augmented float32 window."""
        index, window = self.locate(rng)
        return augment(self.volumes[index][window], self.augment_settings, rng)
