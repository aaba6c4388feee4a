"""``arbitrary-scale``: coordinate-conditioned models scored at a few scales (``validation.scales``, by default the
minimum, middle and maximum of ``scale_range``) on a central block of the validation volume (see
:mod:`Training.validators.blocks`). The scores are the means over the scales, plus the PSNR at each scale."""
from typing import Dict, List, Tuple

import numpy as np
import torch

from ..registry import VALIDATORS
from ..scaling import ScaleRange, array_factors, window_factors
from .base import Images, Scores, Validator
from .blocks import DegradedBlocks

DEFAULT_SCALE_COUNT = 3


def scale_label(factors_xyz) -> str:
    return "x".join(f"{factor:g}" for factor in factors_xyz)


@VALIDATORS.register("arbitrary-scale")
class ArbitraryScaleValidator(Validator):
    def __init__(self, config: dict, device: torch.device):
        super().__init__(config, device)
        self.blocks = DegradedBlocks(config, conditioned=True)
        chosen = config["validation"]["scales"]
        scales = ([array_factors(scale) for scale in chosen] if chosen is not None
                  else ScaleRange.from_config(config["scale_range"]).spread(DEFAULT_SCALE_COUNT))
        self.labels = [scale_label(factors[::-1]) for factors in scales]
        self.factors = [window_factors(factors, config["axes"], config["slice_axis"]) for factors in scales]

    def _averaged(self, per_scale: List[Scores]) -> Scores:
        scores = {key: float(np.mean([entry[key] for entry in per_scale])) for key in per_scale[0]}
        scores.update({f"psnr_{label}": entry["psnr"] for label, entry in zip(self.labels, per_scale)})
        return scores

    def baselines(self) -> Dict[str, Scores]:
        return {"bspline": self._averaged([self.blocks.baseline(factors) for factors in self.factors])}

    def evaluate(self, network: torch.nn.Module) -> Tuple[Scores, Images]:
        results = [self.blocks.evaluate(network, factors, self.device) for factors in self.factors]
        return self._averaged([scores for scores, _ in results]), results[-1][1]

    def describe(self) -> dict:
        return {**super().describe(), "scales": self.labels}
