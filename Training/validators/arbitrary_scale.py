"""``arbitrary-scale``: coordinate-conditioned models scored at a few scales (``validation.scales``, by default the
minimum, middle and maximum of ``scale_range``) on a central block of the validation volume (see
:mod:`Training.validators.blocks`). The scores are the means over the scales, plus the PSNR at each scale."""
from typing import Dict, Tuple

import torch

from ..registry import VALIDATORS
from ..scaling import ScaleRange, window_factors
from .base import Images, Scores, Validator, averaged_over_scales, scale_label, validation_scales
from .blocks import DegradedBlocks

DEFAULT_SCALE_COUNT = 3


@VALIDATORS.register("arbitrary-scale")
class ArbitraryScaleValidator(Validator):
    def __init__(self, config: dict, device: torch.device):
        super().__init__(config, device)
        self.blocks = DegradedBlocks(config, conditioned=True)
        scales = validation_scales(config, ScaleRange.from_config(config["scale_range"]).spread(DEFAULT_SCALE_COUNT))
        self.labels = [scale_label(factors[::-1]) for factors in scales]
        self.factors = [window_factors(factors, config["axes"], config["slice_axis"]) for factors in scales]

    def baselines(self) -> Dict[str, Scores]:
        return {"bspline": averaged_over_scales([self.blocks.baseline(factors) for factors in self.factors],
                                                self.labels)}

    def evaluate(self, network: torch.nn.Module) -> Tuple[Scores, Images]:
        results = [self.blocks.evaluate(network, factors, self.device) for factors in self.factors]
        return averaged_over_scales([scores for scores, _ in results], self.labels), results[-1][1]

    def describe(self) -> dict:
        return {**super().describe(), "scales": self.labels}
