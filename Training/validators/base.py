"""What the validators share: the interface the trainer calls, scoring, and running a network in evaluation mode.

A validator scores the recipe's network on a training-split volume the run does not train on (``validation.volume``;
the held-out Colin27, heudiconv EPI and ITK T1 are refused), in the main process, every ``validation.every`` steps and
at step 0, where it also scores its baselines (interpolation) once.
"""
import contextlib
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch

from MedSRLib.evaluation.metrics import FOREGROUND_THRESHOLD, compare, nrmse, psnr, ssim_slicewise

from ..scaling import Factors, array_factors

Scores = Dict[str, float]
Images = Dict[str, np.ndarray]


def validation_scales(config: dict, default: Sequence[Factors]) -> List[Factors]:
    """The (k, j, i) factors to validate at: ``validation.scales`` when the config lists them, else ``default``."""
    chosen = config["validation"]["scales"]
    return [array_factors(scale) for scale in chosen] if chosen is not None else list(default)


def scale_label(factors_xyz) -> str:
    return "x".join(f"{factor:g}" for factor in factors_xyz)


def averaged_over_scales(per_scale: Sequence[Scores], labels: Sequence[str]) -> Scores:
    """The mean of each score over the validation scales, plus the PSNR at each scale (``psnr_<label>``) when there
    are several."""
    scores = {key: float(np.mean([entry[key] for entry in per_scale])) for key in per_scale[0]}
    if len(per_scale) > 1:
        scores.update({f"psnr_{label}": entry["psnr"] for label, entry in zip(labels, per_scale)})
    return scores


class Validator:
    def __init__(self, config: dict, device: torch.device):
        self.config, self.device = config, device
        self.volume_name = config["validation"]["volume"]

    def baselines(self) -> Dict[str, Scores]:
        """{baseline name: scores}, logged once at step 0 beside the untrained network's scores."""
        return {}

    def evaluate(self, network: torch.nn.Module) -> Tuple[Scores, Images]:
        """Scores of ``network`` and 2D images for TensorBoard (values in [0, 1]); by default the middle plane of each
        of :meth:`scored_arrays`'s arrays."""
        scores, arrays = self.scored_arrays(network)
        return scores, middle_planes(arrays)

    def scored_arrays(self, network: torch.nn.Module) -> Tuple[Scores, Images]:
        """The scores of ``network`` with the whole scored region as "prediction", "reference" and "bspline" arrays
        (also for scores the validator does not compute itself: network interpolation's no-reference scores)."""
        raise NotImplementedError(f"{type(self).__name__} does not give its scored arrays.")

    def summary(self, scores: Scores) -> str:
        return f"validation PSNR {scores['psnr']:.2f} dB, L1 {scores['l1']:.5f}"

    def describe(self) -> dict:
        """What the checkpoint's ``metrics.validation`` says the scores were measured on."""
        return {"volume": self.volume_name, "crop": self.config["validation"]["crop"]}


def image_scores(sr: np.ndarray, hr: np.ndarray, slicewise: bool = False) -> Scores:
    """The protocol's metrics and the L1 loss of ``sr`` (clipped to [0, 1]) against ``hr``; ``slicewise``: SSIM is
    the mean 2D SSIM of the slices stacked along axis 0 (2D models)."""
    sr = np.clip(sr, 0, 1)
    if slicewise:
        scores = {"psnr": psnr(sr, hr), "psnr_foreground": psnr(sr, hr, mask=hr > FOREGROUND_THRESHOLD),
                  "ssim": ssim_slicewise(sr, hr, axis=0), "nrmse": nrmse(sr, hr)}
    else:
        scores = compare(sr, hr)
    scores["l1"] = float(np.abs(sr - hr).mean())
    return scores


@contextlib.contextmanager
def evaluating(network: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``network`` in eval mode without gradients; back in training mode afterwards."""
    network.eval()
    try:
        with torch.no_grad():
            yield network
    finally:
        network.train()


def middle_planes(arrays: Images, middle=None) -> Images:
    """Each array's plane ``middle`` (default: the middle one along the first axis), clipped to [0, 1] for display."""
    if middle is None:
        middle = len(arrays["reference"]) // 2
    return {name: np.clip(array[middle], 0, 1) for name, array in arrays.items()}
