"""``paired-2d``: the paired GAN step on 2D slice patches taken along every configured plane of the training volumes.

In-plane models (``axes: 2d-in-plane``, slices along ``slice_axis`` at inference) get both slice axes degraded by their
factors; through-plane models (``2d-through-plane``: TransMRSR, SMORE-like) get the rows degraded by the thick axis's
factor and interpolated back onto the HR grid, as inference interpolates the volume before refining its slices. The
networks the config names must be 2D (the generator, a 2D critic, a 2D feature network for a perceptual loss)."""
from ..registry import RECIPES
from .paired import PairedGanRecipe


@RECIPES.register("paired-2d")
class Paired2dRecipe(PairedGanRecipe):
    validators = {"2d-in-plane": "in-plane-2d", "2d-through-plane": "simulated-thick-slices"}
