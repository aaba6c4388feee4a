"""``corruption-accuracy``: the feature-network pretext task scored on the validation volume: the fraction of
``validation.batches`` corruption batches (the training sampler's, drawn from that volume with the seed + 1) whose
corruption the classifier names."""
from typing import Tuple

import torch

from ..registry import VALIDATORS
from ..samplers.corruptions import CORRUPTIONS, CorruptionSampler
from ..samplers.windows import load_normalised
from .base import Images, Scores, Validator, evaluating


@VALIDATORS.register("corruption-accuracy")
class CorruptionAccuracyValidator(Validator):
    def __init__(self, config: dict, device: torch.device):
        super().__init__(config, device)
        self.sampler = CorruptionSampler.from_config(config, volumes=[load_normalised(self.volume_name)],
                                                     seed_offset=1)
        self.batches = config["validation"]["batches"]

    def evaluate(self, network: torch.nn.Module) -> Tuple[Scores, Images]:
        correct = total = 0
        with evaluating(network):
            for step in range(self.batches):
                batch = self.sampler.batch(step)
                predicted = network(batch["image"].to(self.device)).argmax(dim=1).cpu()
                correct += int((predicted == batch["label"]).sum())
                total += len(batch["label"])
        return {"accuracy": correct / total}, {}

    def summary(self, scores: Scores) -> str:
        return f"validation accuracy {scores['accuracy']:.3f} (chance {1 / len(CORRUPTIONS):.3f})"

    def describe(self) -> dict:
        return {"volume": self.volume_name, "batches": self.batches, "chance": 1 / len(CORRUPTIONS)}
