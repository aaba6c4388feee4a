"""``simulated-thick-slices``: through-plane models scored on a simulated pair. The validation volume is acquired in
thick slices and interpolated back exactly as the unpaired sampler does with the training volumes; the network refines
the central ``validation.slices`` through-plane slices (rows along the thick axis) of a central block of ``crop``
voxels plus ``margin`` voxels of context, and the block's centre is scored against the volume itself, with the
B-spline interpolation as the baseline. Training never uses HR ground truth; only this score does. The thick factor
is the config's ``scale``, or each of ``validation.scales`` (a model with a ``scale_range``): the scores are then the
means over them, plus the PSNR at each.
"""
from typing import Dict, Tuple

import numpy as np
import torch

from MedSRLib.errors import InputError

from ..registry import VALIDATORS
from ..samplers.unpaired import simulate_thick_slices
from ..samplers.windows import load_normalised
from ..scaling import Factors, array_factors, thick_axis
from MedSRLib.evaluation.metrics import edge_sharpness, find_edge_points, piqe_slicewise

from .base import (Images, Scores, Validator, averaged_over_scales, evaluating, image_scores, scale_label,
                   validation_scales)

# The refined block's array axes: (through-plane slice, row along the thick axis, column).
THICK_AXIS_IN_BLOCK = 1
UNIT_SPACING = (1.0, 1.0, 1.0)


class SimulatedThickBlock:
    """The validation volume acquired in thick slices of one factor: the interpolated block the network refines
    (``input``), the scored centre (``inner``) and its reference."""

    def __init__(self, volume: np.ndarray, factors: Factors, config: dict):
        settings = config["validation"]
        axis, factor = thick_axis(factors)
        _, interpolated = simulate_thick_slices(volume, axis, factor, config["data"]["thick_profile"])
        reference = np.moveaxis(volume, axis, 0)[:len(interpolated)]
        side, slices, margin = settings["crop"] + 2 * settings["margin"], settings["slices"], settings["margin"]
        if min(interpolated.shape[0], interpolated.shape[2]) < side or interpolated.shape[1] < slices:
            raise InputError(f"The simulated validation volume {interpolated.shape} is smaller than "
                             f"{slices} slices of {side}² voxels; lower validation.crop, margin or slices.")
        block = tuple(slice(n // 2 - size // 2, n // 2 - size // 2 + size)
                      for n, size in zip(interpolated.shape, (side, slices, side)))
        # (slices, rows along the thick axis, columns), as the engine hands through-plane slices to the network.
        self.input = np.ascontiguousarray(np.moveaxis(interpolated[block], 1, 0))
        self.inner = (slice(None), slice(margin, margin + settings["crop"]), slice(margin, margin + settings["crop"]))
        self.reference = np.ascontiguousarray(np.moveaxis(reference[block], 1, 0)[self.inner])
        self.edge_points = find_edge_points(self.reference, UNIT_SPACING, axis=THICK_AXIS_IN_BLOCK)

    def scores(self, sr: np.ndarray) -> Scores:
        scores = image_scores(sr, self.reference, slicewise=True)
        clipped = np.clip(sr, 0, 1)
        scores["piqe"] = piqe_slicewise(clipped, axis=0)
        scores["edge_sharpness"] = edge_sharpness(clipped, UNIT_SPACING, axis=THICK_AXIS_IN_BLOCK,
                                                  points=self.edge_points)
        return scores

    def scored_arrays(self, network: torch.nn.Module, device: torch.device) -> Tuple[Scores, Images]:
        with evaluating(network):
            sr = network(torch.from_numpy(self.input[:, None]).to(device))[:, 0].float().cpu().numpy()
        sr = sr[self.inner]
        return self.scores(sr), {"prediction": sr, "reference": self.reference, "bspline": self.input[self.inner]}


@VALIDATORS.register("simulated-thick-slices")
class SimulatedThickSliceValidator(Validator):
    def __init__(self, config: dict, device: torch.device):
        super().__init__(config, device)
        volume = load_normalised(self.volume_name)
        scales = validation_scales(config, [array_factors(config["scale"])])
        self.labels = [scale_label(factors[::-1]) for factors in scales]
        self.blocks = [SimulatedThickBlock(volume, factors, config) for factors in scales]

    def baselines(self) -> Dict[str, Scores]:
        return {"bspline": averaged_over_scales([block.scores(block.input[block.inner]) for block in self.blocks],
                                                self.labels)}

    def summary(self, scores: Scores) -> str:
        return (f"{super().summary(scores)}, PIQE {scores['piqe']:.1f}, "
                f"edge sharpness {scores['edge_sharpness']:.3f} mm⁻¹")

    def scored_arrays(self, network: torch.nn.Module) -> Tuple[Scores, Images]:
        """The scores averaged over the thick factors; the arrays of the last factor."""
        results = [block.scored_arrays(network, self.device) for block in self.blocks]
        return averaged_over_scales([scores for scores, _ in results], self.labels), results[-1][1]

    def describe(self) -> dict:
        return {**super().describe(), "slices": self.config["validation"]["slices"], "simulated": "thick slices",
                "scales": self.labels}
