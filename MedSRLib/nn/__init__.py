"""Neural networks: ``blocks`` holds shared layers, ``nets`` the registered architectures (as MONAI splits them).

A checkpoint names an architecture and its hyper-parameters; :func:`build_network` rebuilds it without unpickling.
"""
from .registry import architecture_names, build_network, register_architecture

__all__ = ["architecture_names", "build_network", "register_architecture"]
