"""The methods MedSR offers, registered by name; importing this package registers them all."""
from .base import Method, MethodKind, RunSettings, get_method, list_methods, register
from . import lanczos, spline_interpolation  # noqa: F401  (registration side effect)
from . import clade, smore  # noqa: F401  (registration side effect)
from . import dcsrn, esrgan3d, threeplayer  # noqa: F401  (registration side effect)

__all__ = ["Method", "MethodKind", "RunSettings", "get_method", "list_methods", "register"]
