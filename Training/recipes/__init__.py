"""Recipes: what one training step does. Importing this package registers the built-in ones."""
from . import (arbitrary_scale, feature_pretraining, generative_prior, paired_2d, paired_3d,  # noqa: F401
               segmentation, unpaired_cycle)
