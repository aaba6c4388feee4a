"""``feature-pretraining``: the feature network of a perceptual loss (ESRGAN-3D's frozen player), pre-trained on a
self-supervised pretext task, since no pretrained 3D VGG can be downloaded here.

The network (``networks.feature_extractor``, e.g. ``resnet10_3d``) tells which corruption of the ``corruptions``
sampler was applied to an HR training patch — an SR output's artefacts, which a perceptual loss should see — through
global average pooling and one linear layer. The head is dropped on export: the checkpoint holds the feature network
alone, ready for ``networks.feature_extractor.checkpoint``.
"""
from typing import Dict, Tuple

import torch

from ..distributed import Distributed
from ..registry import RECIPES
from ..samplers.corruptions import CORRUPTIONS
from .base import Recipe


class CorruptionClassifier(torch.nn.Module):
    def __init__(self, features: torch.nn.Module, channels: int, classes: int):
        super().__init__()
        self.features = features
        self.head = torch.nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        return self.head(features.mean(dim=tuple(range(2, features.dim()))))


def output_channels(network: torch.nn.Module, patch: int) -> int:
    """The channels ``network`` returns for a ``patch``³ input (run once in eval mode: no statistics change)."""
    network.eval()
    with torch.no_grad():
        channels = network(torch.zeros(1, 1, patch, patch, patch, device=next(network.parameters()).device)).shape[1]
    network.train()
    return channels


@RECIPES.register("feature-pretraining")
class FeaturePretrainingRecipe(Recipe):
    sampler = "corruptions"
    validators = {"3d": "corruption-accuracy"}
    exporter = "feature-network"
    headline = "loss/cross_entropy"

    def __init__(self, config: dict, dist: Distributed):
        super().__init__(config, dist)
        features = self.build(config["networks"]["feature_extractor"])
        channels = output_channels(features, config["data"]["hr_patch"])
        self.networks["classifier"] = CorruptionClassifier(features, channels, len(CORRUPTIONS)).to(dist.device)
        self.optimisers["classifier"] = self.adam(self.networks["classifier"])
        self.finish_setup()

    @property
    def exported(self) -> Tuple[torch.nn.Module, dict]:
        return self.networks["classifier"].features, self.architecture("feature_extractor")

    @property
    def validation_network(self) -> torch.nn.Module:
        return self.networks["classifier"]

    def train_step(self, batch: Dict[str, torch.Tensor], step: int) -> Dict[str, float]:
        self.networks["classifier"].train()
        with self.autocast():
            loss = torch.nn.functional.cross_entropy(self.wrapped["classifier"](batch["image"]), batch["label"])
        self.update("classifier", loss)
        return {"loss/cross_entropy": loss.item()}
