"""Augmentation of high-resolution windows (2D or 3D): random flips, a smooth multiplicative bias field, gamma and an
intensity scale, each drawn from the generator it is given (so a batch depends only on its seed).

Written here rather than with torchio: see Training/README.md ("Augmentation") for the measurement.
"""
import itertools
from typing import Sequence

import numpy as np


def bias_field(shape: Sequence[int], strength: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field exp(Σ c·term) over the window, with the terms of degree 1 and 2 of the axis
    coordinates in [−1, 1] (x, y, …, x², y², …, xy, xz, …) and each |c| ≤ strength."""
    axes = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij")
    terms = [*axes, *(axis ** 2 for axis in axes), *(a * b for a, b in itertools.combinations(axes, 2))]
    log_field = np.zeros(shape, dtype=np.float32)
    for term in terms:
        log_field += rng.uniform(-strength, strength) * term
    return np.exp(log_field)


def random_flips(dimensions: int, rng: np.random.Generator) -> tuple:
    """An index that reverses each of ``dimensions`` axes with probability ½ (to flip an image and its labels alike)."""
    return tuple(slice(None, None, -1) if rng.random() < 0.5 else slice(None) for _ in range(dimensions))


def augment(window: np.ndarray, settings: dict, rng: np.random.Generator) -> np.ndarray:
    """A float32 copy of ``window`` with the augmentations ``settings`` switches on (``data.augment``)."""
    if settings.get("flip"):
        window = window[random_flips(window.ndim, rng)]
    window = np.array(window, dtype=np.float32)
    if settings.get("bias_field"):
        window *= bias_field(window.shape, settings["bias_field"], rng)
    if settings.get("gamma"):
        window = np.clip(window, 0, None) ** np.float32(np.exp(rng.uniform(*np.log(settings["gamma"]))))
    if settings.get("intensity_scale"):
        window *= np.float32(rng.uniform(*settings["intensity_scale"]))
    return window
