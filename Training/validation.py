"""Periodic validation with the DATA.md protocol on a volume the run does not train on.

The whole volume is cropped, normalised and block-mean degraded exactly as the protocol says (MedSRLib.degrade); then,
to stay cheap during training, only a central cube of ``crop`` HR voxels is super-resolved (from an LR region with a
``margin`` of context on every side) and scored with MedSRLib.metrics.compare, plus the L1 validation loss.
"""
from typing import Callable, Dict

import numpy as np

from MedSRLib.evaluation.protocol import degrade_protocol
from MedSRLib.errors import InputError
from MedSRLib.evaluation.metrics import compare
from MedSRLib.grid.spline import corner_aligned_resample
from MedSRLib.io.volume_files import read_volume

from .patches import resolve_volume_path

Predictor = Callable[[np.ndarray], np.ndarray]


class Validator:
    def __init__(self, volume: str, scale: int, crop: int, margin: int):
        if crop % scale or margin < 0:
            raise InputError(f"The validation crop {crop} must be a multiple of the scale {scale}; the margin must "
                             "not be negative.")
        hr, lr = degrade_protocol(read_volume(resolve_volume_path(volume)).array, "isotropic", scale)
        lr_crop = crop // scale
        centre = [n // 2 for n in lr.shape]
        lr_start = [max(0, c - lr_crop // 2) for c in centre]
        if any(s + lr_crop > n for s, n in zip(lr_start, lr.shape)):
            raise InputError(f"The validation volume (LR shape {lr.shape}) is smaller than the {crop}³ crop.")
        context_start = [max(0, s - margin) for s in lr_start]
        context_stop = [min(n, s + lr_crop + margin) for s, n in zip(lr_start, lr.shape)]
        self.scale = scale
        self.name = volume
        self.lr = np.ascontiguousarray(lr[tuple(slice(a, b) for a, b in zip(context_start, context_stop))])
        self.inner = tuple(slice((s - a) * scale, (s - a + lr_crop) * scale) for s, a in zip(lr_start, context_start))
        self.hr = np.ascontiguousarray(hr[tuple(slice(s * scale, (s + lr_crop) * scale) for s in lr_start)])

    def score(self, predict: Predictor) -> Dict[str, float]:
        """Protocol metrics (PSNR, fg-PSNR, SSIM, NRMSE) and the L1 loss of ``predict(lr)`` on the central cube."""
        sr = np.clip(predict(self.lr)[self.inner], 0, 1)
        scores = compare(sr, self.hr)
        scores["l1"] = float(np.abs(sr - self.hr).mean())
        return scores

    def bspline_baseline(self) -> Dict[str, float]:
        return self.score(lambda lr: corner_aligned_resample(lr, (float(self.scale),) * 3, order=3))

    def sample_slices(self, predict: Predictor) -> Dict[str, np.ndarray]:
        """Central axial slices of the B-spline input, the prediction and the reference, for TensorBoard."""
        middle = self.hr.shape[0] // 2
        sr = np.clip(predict(self.lr)[self.inner], 0, 1)
        bspline = np.clip(corner_aligned_resample(self.lr, (float(self.scale),) * 3, order=3)[self.inner], 0, 1)
        return {"bspline": bspline[middle], "prediction": sr[middle], "reference": self.hr[middle]}
