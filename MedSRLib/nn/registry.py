"""The architecture registry: checkpoints name an architecture, :func:`build_network` rebuilds it.

Checkpoint metadata names an architecture and its hyper-parameters (``{"name": "rrdb3d", "params": {...}}``);
:func:`build_network` turns that back into a module, so loading a checkpoint never unpickles code.
"""
from typing import Callable, Dict

import torch

from MedSRLib.errors import CheckpointError

_ARCHITECTURES: Dict[str, Callable[..., torch.nn.Module]] = {}


def register_architecture(name: str):
    """Decorator for a network class or factory whose keyword arguments are its hyper-parameters."""
    def decorator(factory):
        if name in _ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is already registered")
        _ARCHITECTURES[name] = factory
        return factory
    return decorator


def build_network(name: str, params: dict) -> torch.nn.Module:
    _import_all()
    if name not in _ARCHITECTURES:
        raise CheckpointError(f"Checkpoint names an unknown architecture '{name}'; known: {', '.join(sorted(_ARCHITECTURES))}.")
    try:
        return _ARCHITECTURES[name](**params)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"Checkpoint hyper-parameters do not fit architecture '{name}' ({error}).") from None


def architecture_names():
    _import_all()
    return sorted(_ARCHITECTURES)


def _import_all():
    """Import every module of ``nn.nets`` so their @register_architecture decorators run."""
    import importlib
    import pkgutil

    from . import nets
    for module in pkgutil.iter_modules(nets.__path__):
        importlib.import_module(f"{nets.__name__}.{module.name}")
