"""``tissue-dice``: a segmentation network scored on the axial slices ``validation.slab`` of ``validation.volume``
(whole slices), by the Dice of each tissue of :data:`~Training.samplers.tissue.TISSUES` between its most probable class
and the labels; ``dice`` is the mean of grey and white matter's."""
from typing import Tuple

import numpy as np
import torch

from ..losses import dice_coefficients
from ..registry import VALIDATORS
from ..samplers.tissue import TISSUES, checked_slab, tissue_volume
from .base import Images, Scores, Validator, evaluating

SLICES_PER_BATCH = 4
SCORE_NAMES = ("dice_background", "dice_gm", "dice_wm")


@VALIDATORS.register("tissue-dice")
class TissueDiceValidator(Validator):
    def __init__(self, config: dict, device: torch.device):
        super().__init__(config, device)
        image, labels = tissue_volume(self.volume_name)
        self.slab = checked_slab(config, len(image))
        self.image, self.labels = image[slice(*self.slab)], torch.from_numpy(labels[slice(*self.slab)].astype(np.int64))

    def evaluate(self, network: torch.nn.Module) -> Tuple[Scores, Images]:
        with evaluating(network):
            predicted = torch.cat([
                network(torch.from_numpy(self.image[start:start + SLICES_PER_BATCH, None]).to(self.device))
                .argmax(dim=1).cpu() for start in range(0, len(self.image), SLICES_PER_BATCH)])
        one_hot = torch.nn.functional.one_hot(predicted, len(TISSUES)).movedim(-1, 1).float()
        scores = dict(zip(SCORE_NAMES, dice_coefficients(one_hot, self.labels).tolist()))
        scores["dice"] = (scores["dice_gm"] + scores["dice_wm"]) / 2
        middle = len(self.image) // 2
        last = len(TISSUES) - 1
        return scores, {"image": self.image[middle], "labels": self.labels[middle].numpy() / last,
                        "prediction": predicted[middle].numpy() / last}

    def summary(self, scores: Scores) -> str:
        return (f"validation Dice grey matter {scores['dice_gm']:.3f}, white matter {scores['dice_wm']:.3f}, "
                f"background {scores['dice_background']:.3f}")

    def describe(self) -> dict:
        return {"volume": self.volume_name, "slab": list(self.slab), "slice_axis": 0}
