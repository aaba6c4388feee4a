"""ESRGAN-3D (the three-player GAN paper's baseline): the same RRDB generator trained with RaGAN and a perceptual loss
from a *frozen* 3D feature network, which MedSR pre-trains on its training split (no pretrained 3D VGG is available).
Train with ``python -m Training.train --config Training/configs/esrgan3d-x2.yaml``.
"""
from .base import register
from .threeplayer import RRDBPatchMethod


@register
class ESRGAN3D(RRDBPatchMethod):
    name = "esrgan3d"
    description = "ESRGAN-3D: RRDB generator, RaGAN, perceptual loss from a frozen 3D feature network; 3D ×2 isotropic."
