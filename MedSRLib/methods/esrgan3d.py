"""ESRGAN-3D (the three-player GAN paper's baseline), trained as ESRGAN trains: first the RRDB alone with L1 (the
PSNR-oriented model, shipped as ``esrgan3d-psnr-x2``), then the GAN stage from it with RaGAN and a perceptual loss from a
*frozen* 3D feature network, which MedSR pre-trains on its training split (no pretrained 3D VGG is available). Train with
``python -m Training.train --config Training/configs/esrgan3d-psnr-x2-cpu.yaml``, then ``esrgan3d-x2-cpu.yaml``.
"""
from .base import register
from .threeplayer import RRDBPatchMethod


@register
class ESRGAN3D(RRDBPatchMethod):
    name = "esrgan3d"
    description = ("ESRGAN-3D: RRDB generator trained as ESRGAN (an L1 stage, then RaGAN + perceptual loss from a frozen "
                   "3D feature network); 3D ×2 isotropic.")
