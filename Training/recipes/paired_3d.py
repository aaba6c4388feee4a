"""``paired-3d``: the paired GAN step on 3D patches — the three-player GAN, ESRGAN-3D and DCSRN configs."""
from ..registry import RECIPES
from .paired import PairedGanRecipe


@RECIPES.register("paired-3d")
class Paired3dRecipe(PairedGanRecipe):
    validator = "protocol-3d"
    axes = ("3d",)
