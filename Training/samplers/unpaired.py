"""The unpaired sampler of CLADE-style cycle training: patches of two domains cut from thick-slice acquisitions that are
simulated from the training volumes; no high-resolution ground truth is used.

Each training volume is made into thick-slice scans (``thicken_slices``) and cubic-B-spline-interpolated back to
isotropic voxels, as a real anisotropic scan is before a through-plane model runs on it. Without
``data.thick_slices`` that is one scan along the array axis the config's ``scale`` scales, with
``data.thick_profile``; with it, ``scans_per_volume`` scans per volume, each with its own seeded draw of the thick array
axis, a factor uniform in ``factors`` (non-integer too), a profile from ``profiles`` and a gap of a fraction of the
factor uniform in ``gap_fraction``: a data set of anisotropic acquisitions of every kind a clinic makes. Domain X (low resolution) is patches of the interpolated
volume's through-plane slices, in both orientations, rows along the thick axis (as the engine hands slices to a
through-plane network); domain Y (high resolution) is patches of the acquired in-plane slices, randomly transposed.
"""
import logging
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch

from MedSRLib.errors import InputError
from MedSRLib.grid.degradation import thicken_slices
from MedSRLib.grid.spline import corner_aligned_resample

from ..registry import SAMPLERS
from ..scaling import array_factors, thick_axis
from .windows import WindowSampler, item_rng, load_normalised

logger = logging.getLogger(__name__)


def simulate_thick_slices(volume: np.ndarray, axis: int, factor: float, profile: str,
                          gap: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """(acquired, interpolated), both with the thick axis first: ``volume`` acquired in slices ``factor`` voxels apart
    along array ``axis``, and that acquisition interpolated back to isotropic voxels on the corner-aligned grid."""
    acquired = thicken_slices(volume, axis, factor, profile, gap)
    scale_xyz = [1.0, 1.0, 1.0]
    scale_xyz[2 - axis] = factor
    interpolated = corner_aligned_resample(acquired, scale_xyz, order=3)
    return np.moveaxis(acquired, axis, 0), np.moveaxis(interpolated, axis, 0)


@dataclass(frozen=True)
class ThickSliceScan:
    """One simulated acquisition: thick along array ``axis``, slices ``factor`` voxels apart, ``gap`` voxels between."""
    axis: int
    factor: float
    profile: str
    gap: float

    def describe(self) -> str:
        return f"axis {self.axis}, ×{self.factor:.2f}, {self.profile}, gap {self.gap:.2f}"


def draw_scans(config: dict, count: int) -> List[List[ThickSliceScan]]:
    """The simulated acquisitions of each of ``count`` training volumes (seeded by ``config["seed"]``)."""
    spec = config["data"]["thick_slices"]
    if spec is None:
        axis, factor = thick_axis(array_factors(config["scale"]))
        return [[ThickSliceScan(axis, factor, config["data"]["thick_profile"], 0.0)] for _ in range(count)]
    expected = {"scans_per_volume", "axes", "factors", "profiles", "gap_fraction"}
    if not isinstance(spec, dict) or set(spec) != expected:
        raise InputError(f"data.thick_slices must be null or a mapping with exactly the keys "
                         f"{', '.join(sorted(expected))}, not {spec!r}.")
    rng = np.random.default_rng(config["seed"])
    scans = []
    for _ in range(count):
        volume_scans = []
        for _ in range(spec["scans_per_volume"]):
            factor = float(rng.uniform(*spec["factors"]))
            volume_scans.append(ThickSliceScan(int(rng.choice(spec["axes"])), factor, str(rng.choice(spec["profiles"])),
                                               float(rng.uniform(*spec["gap_fraction"]) * factor)))
        scans.append(volume_scans)
    return scans


@SAMPLERS.register("unpaired-thick-slices")
class UnpairedThickSliceSampler:
    def __init__(self, low_resolution: WindowSampler, high_resolution: WindowSampler, batch: int, seed: int):
        self.low_resolution, self.high_resolution = low_resolution, high_resolution
        self.batch_size, self.seed = batch, seed

    @classmethod
    def from_config(cls, config: dict) -> "UnpairedThickSliceSampler":
        names = config["data"]["train"]
        simulated = []
        for name, scans in zip(names, draw_scans(config, len(names))):
            volume = load_normalised(name)
            for scan in scans:
                logger.info("%s: thick slices along %s", name, scan.describe())
                simulated.append(simulate_thick_slices(volume, scan.axis, scan.factor, scan.profile, scan.gap))
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
