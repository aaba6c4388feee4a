"""The methods MedSR offers, registered by name.

Importing this package imports every module in it, so a method file's ``@register`` runs: adding a method is adding
its file (see docs/adding-a-method.md). Method modules import torch only when they run.
"""
import importlib
import pkgutil

from .base import Method, MethodKind, RunSettings, get_method, list_methods, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Method", "MethodKind", "RunSettings", "get_method", "list_methods", "register"]
