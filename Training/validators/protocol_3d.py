"""``protocol-3d``: the evaluation protocol (docs/protocol.md) on the validation volume, for 3D patch models.

The whole volume is cropped, normalised and area-degraded exactly as the protocol says (isotropic, in-plane or thick
rows, from the config's whole factors); then, to stay cheap during training, only a central ``crop`` of HR voxels is
super-resolved (from an LR region with ``margin`` LR voxels of context on every side) through the method's own input
preparation and the tiling engine, as ``medsr super-resolve`` runs it, and scored with the protocol's metrics plus the
L1 validation loss.
"""
from typing import Dict, Tuple

import numpy as np
import torch

from MedSRLib.engine.tiling import TilingOptions, run_tiled
from MedSRLib.errors import InputError
from MedSRLib.evaluation.protocol import degrade_protocol
from MedSRLib.grid.spline import corner_aligned_resample
from MedSRLib.io.volume_files import read_volume
from MedSRLib.methods import RunSettings, get_method

from ..registry import VALIDATORS
from ..samplers.windows import resolve_volume_path
from ..scaling import array_factors, xyz_triple
from .base import Images, Scores, Validator, image_scores


def protocol_row(factors: Tuple[float, ...]) -> Tuple[str, float, int]:
    """(mode, scale, axis) of the protocol degradation with these (k, j, i) factors."""
    scaled = [axis for axis, factor in enumerate(factors) if factor > 1]
    scale = max(factors)
    if len(set(factors[axis] for axis in scaled)) == 1:
        if len(scaled) == 3:
            return "isotropic", scale, 0
        if len(scaled) == 2:
            return "inplane", scale, next(axis for axis in range(3) if axis not in scaled)
        if len(scaled) == 1:
            return "thick", scale, scaled[0]
    raise InputError(f"The protocol validates isotropic, in-plane or thick-slice scales, not the factors {factors}.")


@VALIDATORS.register("protocol-3d")
class Protocol3dValidator(Validator):
    def __init__(self, config: dict, device: torch.device):
        super().__init__(config, device)
        settings = config["validation"]
        factors = array_factors(config["scale"])
        crop, margin = settings["crop"], settings["margin"]
        if any(factor != int(factor) or crop % int(factor) for factor in factors) or margin < 0:
            raise InputError(f"The validation crop {crop} must be a multiple of the whole factors {factors}; the "
                             "margin must not be negative.")
        factors = tuple(int(factor) for factor in factors)
        hr, lr = degrade_protocol(read_volume(resolve_volume_path(self.volume_name)).array, *protocol_row(factors))
        lr_crop = [crop // factor for factor in factors]
        lr_start = [max(0, n // 2 - length // 2) for n, length in zip(lr.shape, lr_crop)]
        if any(start + length > n for start, length, n in zip(lr_start, lr_crop, lr.shape)):
            raise InputError(f"The validation volume (LR shape {lr.shape}) is smaller than the {crop}³ crop.")
        context_start = [max(0, start - margin) for start in lr_start]
        context_stop = [min(n, start + length + margin) for start, length, n in zip(lr_start, lr_crop, lr.shape)]
        self.factors = factors
        self.scale_xyz = xyz_triple(config["scale"], "The scale")
        self.lr = np.ascontiguousarray(lr[tuple(slice(a, b) for a, b in zip(context_start, context_stop))])
        self.inner = tuple(slice((start - a) * factor, (start - a + length) * factor)
                           for start, a, length, factor in zip(lr_start, context_start, lr_crop, factors))
        self.hr = np.ascontiguousarray(hr[tuple(slice(start * factor, (start + length) * factor)
                                                for start, length, factor in zip(lr_start, lr_crop, factors))])
        self.tiling = TilingOptions(patch=settings["patch"], device=device.type,
                                    autocast=bool(config["training"]["amp"]) and device.type == "cuda")

    def predict(self, network: torch.nn.Module) -> np.ndarray:
        """The central crop as ``medsr super-resolve`` computes it; the network is back in training mode afterwards."""
        method = get_method(self.config["method"])
        network_image, factors = method.network_input(self.lr, self.scale_xyz, RunSettings())
        try:
            return run_tiled(network, network_image, factors, self.tiling)[self.inner]
        finally:
            network.train()

    def baselines(self) -> Dict[str, Scores]:
        return {"bspline": image_scores(self.bspline(), self.hr)}

    def bspline(self) -> np.ndarray:
        """The central crop by cubic B-spline, the baseline."""
        return corner_aligned_resample(self.lr, self.scale_xyz, order=3)[self.inner]

    def scored_arrays(self, network: torch.nn.Module) -> Tuple[Scores, Images]:
        sr = self.predict(network)
        return image_scores(sr, self.hr), {"prediction": sr, "reference": self.hr, "bspline": self.bspline()}
