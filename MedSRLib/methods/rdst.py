"""RDST and RDST-E (J. Zhu's thesis, ch. 5; METHODS.md §3): 2D in-plane ×4 by a residual dense Swin transformer
(``nn.nets.rdst``; RDST-E is the same network with 4 instead of 8 blocks), applied to the slices along one array axis.

The checkpoint says which slices (``slice_axis``); ``--scale 4,4,1`` on an axial stack is in-plane ×4. Train with
``python -m Training.train --config Training/configs/rdst-e-x4-cpu.yaml`` (or ``rdst-x4-cpu.yaml``).
"""
from .base import register
from .network import SliceNetworkMethod


@register
class RDST(SliceNetworkMethod):
    name = "rdst"
    description = ("RDST / RDST-E: residual dense shifted-window (Swin) transformer with a pixel-shuffle upsampler; "
                   "2D in-plane ×4.")
    scales = ((4.0, 4.0, 1.0),)
    # Windows are padded to multiples of the attention window (8), so a multiple of 8 wastes nothing.
    default_patch = (48, 48)
    # Per output pixel (16 per input pixel): each input pixel's attention logits (6 heads × 64 keys), dense features
    # and MLP hidden values, then the upsampler's 256-channel maps at ×2 and 64-channel maps at ×4, in float32 values.
    activation_factor = 128.0
