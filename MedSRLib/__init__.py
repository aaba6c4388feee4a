"""MedSRLib: super-resolution of MRI and CT volumes.

Public API::

    volume = MedSRLib.read_volume("t1.nrrd")
    result = MedSRLib.super_resolve(volume, method="bspline", scale=2)
    MedSRLib.write_volume(result, "t1_x2.nrrd")

Importing MedSRLib does not import torch (the Slicer module must load before PyTorch is installed); learned methods
import it when they run.
"""
from ._version import __version__
from .api import super_resolve
from .errors import Cancelled, CheckpointError, InputError, MedSRError, MemoryBudgetError
from .methods import list_methods
from MedSRLib.io.volume import Volume
from MedSRLib.io.volume_files import read_volume, write_volume


def load_model(name_or_path, device="cpu"):
    """(torch.nn.Module, metadata) for a shipped model name or a checkpoint path; see :mod:`MedSRLib.checkpoints`."""
    from MedSRLib.models.checkpoints import load_model as load
    return load(name_or_path, device=device)


__all__ = ["__version__", "Volume", "read_volume", "write_volume", "super_resolve", "list_methods", "load_model",
           "MedSRError", "InputError", "CheckpointError", "MemoryBudgetError", "Cancelled"]
