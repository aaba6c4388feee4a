"""ArSSR (METHODS.md §1 baselines; ``nn.nets.arssr``): arbitrary-scale 3D super-resolution with an implicit decoder —
one model for any float factor per axis from 1 to 4 (isotropic ``--scale 2.4`` or per axis ``--scale 1,1,3.3``).

Tiled like every 3D network: the encoder runs on overlapping LR windows and the decoder on each window's output voxels,
so no whole-volume feature map is ever held. Train with ``python -m Training.train --config
Training/configs/arssr-cpu.yaml``.
"""
from .base import register
from .network import PatchNetworkMethod


@register
class ArSSR(PatchNetworkMethod):
    name = "arssr"
    description = ("ArSSR: 3D ResCNN encoder + MLP decoder queried at each output voxel's position; any float scale "
                   "from 1 to 4 per axis with one model.")
    conditioning = "coordinates"
    default_patch = (32, 32, 32)
    # Per output voxel at ×1 (less at larger factors): the encoder's 32-feature maps on the input grid (a few alive at
    # once), the coordinates, the Lanczos skip's partial sums and the output, in float32 values; the decoder's hidden
    # layers run on bounded chunks (nn.nets.arssr.DECODER_CHUNK) and add no per-voxel memory.
    activation_factor = 160.0
