"""MS-GAN (J. Zhu's thesis, ch. 3; METHODS.md §3): 2D in-plane ×4 by two stacked ×2 SRResNet stages
(``nn.nets.msgan``), applied to the slices along one array axis.

The checkpoint says which slices (``slice_axis``) and which scale; ``--scale 4,4,1`` on an axial stack is in-plane ×4. Train with
``python -m Training.train --config Training/configs/msgan-x4-cpu.yaml``.
"""
from .base import register
from .network import SliceNetworkMethod


@register
class MSGAN(SliceNetworkMethod):
    name = "msgan"
    description = ("MS-GAN: two stacked ×2 SRResNet stages, the ×2 output supervised too; 2D in-plane ×4.")
    default_patch = (48, 48)
    # Per output pixel: the stage-2 feature maps at ×2 (a quarter of the output pixels, a few alive at once) and the
    # ×4 pixel-shuffle and output maps, in float32 values.
    activation_factor = 96.0
