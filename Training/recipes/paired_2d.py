"""``paired-2d``: the paired GAN step on 2D slice patches taken along every configured plane of the training volumes,
degraded in-plane; for 2D in-plane models (slices along ``slice_axis`` at inference). The networks the config names
must be 2D (the generator, a 2D critic, a 2D feature network for a perceptual loss)."""
from ..registry import RECIPES
from .paired import PairedGanRecipe


@RECIPES.register("paired-2d")
class Paired2dRecipe(PairedGanRecipe):
    validator = "in-plane-2d"
    axes = ("2d-in-plane",)
