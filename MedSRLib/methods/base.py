"""What a super-resolution method is, and the registry that finds methods by name.

A method works on an intensity-normalised float32 array in (k, j, i) order and returns the array on the output grid
(``geometry.output_shape``); reading, normalising, geometry and writing are done once, around it, by ``api.super_resolve``.
"""
import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from MedSRLib.errors import InputError, MemoryBudgetError
from MedSRLib.grid.geometry import format_scale
from MedSRLib.progress import CancelCheck, ProgressCallback
from .options import MethodOption, Spelling, check_option_values

DEFAULT_MEMORY_BUDGET_GB = float(os.environ.get("MEDSR_MEMORY_BUDGET_GB", "8"))
DEFAULT_NORMALISATION = {"mode": "percentile", "percentiles": [0.5, 99.5]}


class MethodKind(str, Enum):
    INTERPOLATION = "interpolation"
    PATCH_3D = "3d-patch"
    SLICE_2D = "2d-slice"
    PER_SCAN = "per-scan"


@dataclass
class RunSettings:
    """Options shared by all methods; ``options`` holds method-specific ones. Patch and stride are in input voxels."""
    patch: Optional[Tuple[int, ...]] = None
    stride: Optional[Tuple[int, ...]] = None
    blend: str = "gaussian"
    batch_size: int = 4
    device: str = "auto"
    backend: str = "auto"  # what runs a network's forward pass (engine.backends)
    checkpoint: Optional[str] = None
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB
    progress: Optional[ProgressCallback] = None
    cancel: Optional[CancelCheck] = None
    options: Dict[str, object] = field(default_factory=dict)
    # Filled by the method while it runs (e.g. the checkpoint's sha256); copied into the output's metadata.
    provenance: Dict[str, object] = field(default_factory=dict)

    def require_memory(self, needed_bytes: float, what: str) -> None:
        """Refuse, before allocating, work whose buffers exceed the memory budget."""
        budget = self.memory_budget_gb * 2 ** 30
        if needed_bytes > budget:
            raise MemoryBudgetError(
                f"{what} needs about {needed_bytes / 2 ** 30:.1f} GiB, above the {self.memory_budget_gb:g} GiB memory "
                "budget; crop the volume, lower the scale, or raise the budget (--memory-budget / MEDSR_MEMORY_BUDGET_GB).")


class Method:
    """Base class: subclasses set the class attributes and implement :meth:`run`."""
    name: str = ""
    kind: MethodKind = MethodKind.INTERPOLATION
    description: str = ""
    # Allowed (x, y, z) scales, or None for any scale within geometry.MAX_SCALE.
    scales: Optional[Sequence[Tuple[float, float, float]]] = None
    default_patch: Optional[Tuple[int, ...]] = None
    default_stride: Optional[Tuple[int, ...]] = None
    # The method-specific keyword options super_resolve accepts for this method; any other is refused.
    options: Tuple[MethodOption, ...] = ()

    @property
    def option_names(self) -> Tuple[str, ...]:
        return tuple(option.name for option in self.options)

    def check_options(self, options: Dict[str, object], spell: Spelling = str) -> None:
        """Refuse an option this method does not declare, or a value outside its declaration, naming options as
        ``spell`` gives them (the keyword; the command line passes its flags)."""
        check_option_values(self.name, self.options, options, spell)

    def option_values(self, given: Dict[str, object]) -> Dict[str, object]:
        """Every declared option's value: the given one, else the declared default (None: the method decides)."""
        values = {option.name: option.default for option in self.options}
        values.update((name, value) for name, value in given.items() if value is not None)
        return values

    def default_scale(self, spacing_xyz: Sequence[float], checkpoint: Optional[str] = None):
        """The scale a call that gives none asks for, on a volume of this spacing: 2 on every axis here."""
        return 2

    def check_scale(self, scale_xyz: Tuple[float, float, float], settings: RunSettings) -> None:
        """Refuse a scale this method cannot serve, before any work."""
        if self.scales is not None and not any(np.allclose(scale_xyz, allowed) for allowed in self.scales):
            raise InputError(f"Method '{self.name}' supports the scales {self.describe_scales()}, not "
                             f"{format_scale(scale_xyz)}.")

    def normalisation(self, scale_xyz, settings: RunSettings) -> dict:
        """How intensities are mapped to [0, 1] unless the caller says otherwise (learned methods: as trained)."""
        return dict(DEFAULT_NORMALISATION)

    def describe_scales(self) -> str:
        if self.scales is None:
            return "any"
        return ", ".join(format_scale(allowed) for allowed in self.scales)

    def run(self, image: np.ndarray, scale_xyz: Tuple[float, float, float], spacing: Tuple[float, float, float],
            settings: RunSettings) -> np.ndarray:
        raise NotImplementedError

    def tiled_pass(self, shape: Sequence[int], scale_xyz: Tuple[float, float, float], settings: RunSettings):
        """(array shape, factors per array axis, engine TilingOptions) of the network pass :meth:`run` would tile
        for a (k, j, i) input ``shape`` — what a memory estimate needs — or None for a method that tiles nothing."""
        return None

    def info(self) -> dict:
        return {"name": self.name, "kind": self.kind.value, "description": self.description,
                "scales": self.describe_scales(), "default_patch": self.default_patch,
                "default_stride": self.default_stride,
                "options": [option.describe() for option in self.options]}


_REGISTRY: Dict[str, Method] = {}


def register(method_class):
    """Class decorator: register one instance of a Method subclass under its name."""
    instance = method_class()
    if not instance.name or instance.name in _REGISTRY:
        raise ValueError(f"method name {instance.name!r} is empty or already registered")
    _REGISTRY[instance.name] = instance
    return method_class


def get_method(name: str) -> Method:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"Unknown method '{name}'; available: {', '.join(sorted(_REGISTRY))}.") from None


def registered_methods() -> List[Method]:
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def list_methods() -> List[dict]:
    return [method.info() for method in registered_methods()]
