"""``paired-3d``: the paired GAN step on 3D patches — the three-player GAN, ESRGAN-3D and DCSRN configs."""
from ..registry import RECIPES
from .paired import PairedGanRecipe


@RECIPES.register("paired-3d")
class Paired3dRecipe(PairedGanRecipe):
    validators = {"3d": "protocol-3d"}
