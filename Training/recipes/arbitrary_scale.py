"""``arbitrary-scale``: the paired GAN step with one scale per batch from ``scale_range``, for networks conditioned on
output coordinates (MIASSR, ArSSR): ``generator(x, coordinates, scale)`` with the batch's coordinates (B, ndim,
*target) and per-axis scale (B, ndim); 3D patches or 2D in-plane slices."""
from typing import Dict

import torch

from ..registry import RECIPES
from .paired import PairedGanRecipe


@RECIPES.register("arbitrary-scale")
class ArbitraryScaleRecipe(PairedGanRecipe):
    sampler = "arbitrary-scale"
    validators = {"3d": "arbitrary-scale", "2d-in-plane": "arbitrary-scale"}
    conditioning = "coordinates"

    def generate(self, generator: torch.nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return generator(batch["input"], batch["coordinates"], batch["scale"])
