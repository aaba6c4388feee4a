"""The methods MedSR offers, registered by name; importing this package registers them all."""
from .base import Method, MethodKind, RunSettings, get_method, list_methods, register
# Importing a method's module registers it.
from . import clade, dcsrn, esrgan3d, lanczos, smore, spline_interpolation, threeplayer  # noqa: F401

__all__ = ["Method", "MethodKind", "RunSettings", "get_method", "list_methods", "register"]
