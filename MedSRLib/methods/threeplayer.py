"""Three-player GAN (seed 001, METHODS.md §1): a 3D RRDB generator trained against an instance-norm patch critic with
the relativistic average GAN loss, instance noise, and a perceptual loss from a ResNet10 trained alongside.

Inference is the generator alone, tiled with overlap blending on the corner-aligned output grid. Train a model with
``python -m Training.train --config Training/configs/threeplayer-x2.yaml``.
"""
from .base import register
from .network import PatchNetworkMethod


class RRDBPatchMethod(PatchNetworkMethod):
    """A 3D RRDB generator (``rrdb3d``) applied to LR windows; patch and stride are LR voxels (output 2× larger)."""
    scales = ((2.0, 2.0, 2.0),)
    default_patch = (32, 32, 32)
    # Dense-block activations on the LR grid plus 64-channel maps on the output grid, in float32 values per output voxel.
    activation_factor = 256.0


@register
class ThreePlayerGAN(RRDBPatchMethod):
    name = "threeplayer"
    description = ("Three-player GAN (RRDB generator, RaGAN critic with instance noise, jointly trained ResNet10 "
                   "perceptual loss); 3D ×2 isotropic, brain MRI.")
