"""``segmentation``: the segmentation U-Net of RDST-E's perceptual loss (thesis ch. 5), trained with the soft Dice loss
over background, grey and white matter (``Training.losses.dice_loss``) on the ``tissue-slices`` sampler's labelled 2D
slice patches. The U-Net is a training-time artefact: the ``feature-network`` exporter writes only its first encoder
block (the thesis's L_E(1)), a frozen 2D feature network for ``networks.feature_extractor.checkpoint``.
"""
from typing import Dict, Tuple

import torch

from ..distributed import Distributed
from ..losses import dice_loss
from ..registry import RECIPES
from .base import Recipe

EXPORTED_ENCODER_BLOCKS = 1


@RECIPES.register("segmentation")
class SegmentationRecipe(Recipe):
    sampler = "tissue-slices"
    validators = {"2d-in-plane": "tissue-dice"}
    exporter = "feature-network"
    headline = "loss/dice"

    def __init__(self, config: dict, dist: Distributed):
        super().__init__(config, dist)
        self.networks["segmenter"] = self.build(config["networks"]["segmenter"])
        self.optimisers["segmenter"] = self.adam(self.networks["segmenter"])
        self.finish_setup()

    @property
    def exported(self) -> Tuple[torch.nn.Module, dict]:
        return self.networks["segmenter"].feature_network(EXPORTED_ENCODER_BLOCKS)

    @property
    def validation_network(self) -> torch.nn.Module:
        return self.networks["segmenter"]

    def train_step(self, batch: Dict[str, torch.Tensor], step: int) -> Dict[str, float]:
        self.networks["segmenter"].train()
        with self.autocast():
            probabilities = self.wrapped["segmenter"](batch["image"]).float().softmax(dim=1)
        loss = dice_loss(probabilities, batch["labels"])
        self.update("segmenter", loss)
        return {"loss/dice": loss.item()}
