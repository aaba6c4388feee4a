"""``in-plane-2d``: 2D in-plane models scored on the central slices of the validation volume along their slice axis,
area-degraded in-plane by the config's factors (see :mod:`Training.validators.blocks`)."""
from typing import Dict, Tuple

import torch

from ..registry import VALIDATORS
from ..scaling import array_factors, window_factors
from .base import Images, Scores, Validator
from .blocks import DegradedBlocks


@VALIDATORS.register("in-plane-2d")
class InPlane2dValidator(Validator):
    def __init__(self, config: dict, device: torch.device):
        super().__init__(config, device)
        self.blocks = DegradedBlocks(config, conditioned=False)
        self.factors = window_factors(array_factors(config["scale"]), config["axes"], config["slice_axis"])

    def baselines(self) -> Dict[str, Scores]:
        return {"bspline": self.blocks.baseline(self.factors)}

    def scored_arrays(self, network: torch.nn.Module) -> Tuple[Scores, Images]:
        return self.blocks.scored_arrays(network, self.factors, self.device)

    def describe(self) -> dict:
        return {**super().describe(), "slices": self.config["validation"]["slices"]}
