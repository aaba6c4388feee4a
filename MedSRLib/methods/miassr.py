"""MIASSR (J. Zhu's thesis, ch. 4; METHODS.md §3): meta-learning arbitrary-scale 2D super-resolution — one model for
any in-plane factor from 1.1 to 4 per axis, applied to the slices along one array axis (``nn.nets.miassr``).

The checkpoint says which slices (``slice_axis``) and which scales (``scale_range``); ``--scale 2.4,2.4,1`` on an
axial stack is in-plane ×2.4. Train with ``python -m Training.train --config Training/configs/miassr-cpu.yaml``.
"""
from .base import register
from .network import SliceNetworkMethod


@register
class MIASSR(SliceNetworkMethod):
    name = "miassr"
    description = ("MIASSR: EDSR-lite encoder + Meta-Upscale (per-pixel filters from scale and position); 2D in-plane, "
                   "any scale from 1.1 to 4 per axis with one model.")
    conditioning = "coordinates"
    default_patch = (48, 48)
    # Per output pixel: the gathered 3×3·C features and their predicted weights (C = 64 at most) plus Pos2Weight's
    # hidden layer, in float32 values.
    activation_factor = 1500.0
