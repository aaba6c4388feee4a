"""A network's arithmetic per output voxel, counted by torch's FLOP counter on one tiling window: what publishing a model
records in its checkpoint (``cost``), so methods can be compared by the work they do and not only by a time measured
on one machine."""
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from MedSRLib.grid.geometry import output_coordinates


def flops_per_output_voxel(model: torch.nn.Module, window: Sequence[int], conditioning: str = "none",
                           factors: Optional[Sequence[float]] = None) -> float:
    """FLOPs (a multiply-add counts 2) of one forward pass over a window of ``window`` input voxels (2D or 3D, batch 1)
    divided by the output voxels it returns; a coordinate-conditioned network also needs the ``factors`` of the window
    axes. Convolutions, matrix products and attention are counted; element-wise work is not."""
    inputs = example_inputs(window, conditioning, factors)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        output = model.eval()(*inputs)
    return counter.get_total_flops() / output.numel()


def example_inputs(window: Sequence[int], conditioning: str = "none",
                   factors: Optional[Sequence[float]] = None) -> list:
    """The arguments of one forward pass over a random window of ``window`` input voxels (batch 1): the window, and
    for a coordinate-conditioned network its output coordinates and per-axis ``factors``."""
    inputs = [torch.rand(1, 1, *window)]
    if conditioning == "coordinates":
        out_window = [max(1, int(round(n * f))) for n, f in zip(window, factors)]
        coordinates = output_coordinates(out_window, factors).astype(np.float32)
        inputs += [torch.from_numpy(coordinates)[None], torch.tensor([list(factors)], dtype=torch.float32)]
    return inputs
