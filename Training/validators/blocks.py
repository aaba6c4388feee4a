"""Validation blocks of the 2D and arbitrary-scale validators: a central block of the validation volume, its exact
area average at given factors, the network's output for it, and scores on the block's centre.

A 3D model gets one cube; a 2D in-plane model the ``validation.slices`` central slices along its slice axis, as one
batch. The block is ``crop`` HR voxels plus a context of ``margin`` LR voxels on each side of every window axis; the
network sees it whole (keep ``validation.crop`` small for a large network) and only the central ``crop`` is scored,
against the HR voxels the output lands on (the corner-aligned grid: see ``Training.samplers.degradation``).
"""
import math
from typing import Sequence, Tuple

import numpy as np
import torch

from MedSRLib.errors import InputError
from MedSRLib.grid.degradation import area_average
from MedSRLib.grid.geometry import output_coordinates

from ..samplers.degradation import bspline_upsample, sr_length
from ..samplers.windows import load_normalised
from ..scaling import window_axes
from .base import Images, Scores, evaluating, image_scores, middle_planes


class DegradedBlocks:
    """Blocks are held as (samples, *window): one sample for a 3D model, the slices for a 2D one."""

    def __init__(self, config: dict, conditioned: bool):
        settings = config["validation"]
        if settings["margin"] < 1:
            raise InputError("The 2D and arbitrary-scale validators need validation.margin of at least 1.")
        self.volume = load_normalised(settings["volume"])
        self.axes = window_axes(config["axes"], config["slice_axis"])
        self.slice_axis = None if config["axes"] == "3d" else config["slice_axis"]
        self.crop, self.margin, self.slices = settings["crop"], settings["margin"], settings["slices"]
        self.conditioned = conditioned

    @property
    def is_2d(self) -> bool:
        return self.slice_axis is not None

    def block(self, factors: Sequence[float]) -> Tuple[np.ndarray, np.ndarray, tuple]:
        """(LR, HR of the scored region, where that region lies in the output) at ``factors`` (window axes)."""
        context = [math.ceil(self.margin * factor) for factor in factors]
        sides = dict(zip(self.axes, (self.crop + 2 * c for c in context)))
        if self.is_2d:
            sides[self.slice_axis] = self.slices
        if any(sides[axis] > n for axis, n in enumerate(self.volume.shape)):
            raise InputError(f"The validation volume {self.volume.shape} is smaller than a block of "
                             f"{[sides[axis] for axis in range(3)]} voxels; lower validation.crop, margin or slices.")
        hr = self.volume[tuple(slice(n // 2 - sides[axis] // 2, n // 2 - sides[axis] // 2 + sides[axis])
                               for axis, n in enumerate(self.volume.shape))]
        hr = np.moveaxis(hr, self.slice_axis, 0) if self.is_2d else hr[None]
        inner = (slice(None), *(slice(c, c + self.crop) for c in context))
        return area_average(hr, (1, *factors)), np.ascontiguousarray(hr[inner]), inner

    def predict(self, network: torch.nn.Module, lr: np.ndarray, factors: Sequence[float],
                device: torch.device) -> np.ndarray:
        inputs = [torch.from_numpy(lr[:, None]).to(device)]
        if self.conditioned:
            coordinates = output_coordinates([sr_length(n, f) for n, f in zip(lr.shape[1:], factors)],
                                             factors).astype(np.float32)
            inputs.append(torch.from_numpy(coordinates[None]).expand(len(lr), *coordinates.shape).to(device))
            inputs.append(torch.tensor([list(factors)] * len(lr), dtype=torch.float32, device=device))
        with evaluating(network):
            return network(*inputs)[:, 0].float().cpu().numpy()

    def bspline(self, lr: np.ndarray, factors: Sequence[float]) -> np.ndarray:
        """The cubic B-spline of every sample on the output grid: the interpolation baseline."""
        if self.is_2d:  # the stacked slices are not interpolated across (factor 1 along the stack)
            return bspline_upsample(lr, (1.0, *factors))
        return bspline_upsample(lr[0], factors)[None]

    def scores(self, sr: np.ndarray, hr: np.ndarray) -> Scores:
        """2D: over the slice stack with slice-wise SSIM; 3D: over the cube."""
        return image_scores(sr, hr, slicewise=True) if self.is_2d else image_scores(sr[0], hr[0])

    def baseline(self, factors: Sequence[float]) -> Scores:
        lr, hr, inner = self.block(factors)
        return self.scores(self.bspline(lr, factors)[inner], hr)

    def scored_arrays(self, network: torch.nn.Module, factors: Sequence[float],
                      device: torch.device) -> Tuple[Scores, Images]:
        """Scores of the network at ``factors`` and the scored region's output, reference and B-spline."""
        lr, hr, inner = self.block(factors)
        sr = self.predict(network, lr, factors, device)[inner]
        return self.scores(sr, hr), {"prediction": sr, "reference": hr, "bspline": self.bspline(lr, factors)[inner]}

    def evaluate(self, network: torch.nn.Module, factors: Sequence[float],
                 device: torch.device) -> Tuple[Scores, Images]:
        """Scores of the network at ``factors`` and the central plane of its B-spline input, output and reference."""
        scores, arrays = self.scored_arrays(network, factors, device)
        hr = arrays["reference"]
        return scores, middle_planes(arrays, len(hr) // 2 if self.is_2d else (0, hr.shape[1] // 2))
