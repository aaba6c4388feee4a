"""The DATA.md evaluation protocol: degrade a held-out volume, super-resolve it back, score it against the original.

``python -m MedSRLib.evaluation --methods linear bspline`` prints the Colin27 reference table as Markdown;
``--volume heudiconv-epi --rows isotropic-2 --methods bspline threeplayer --checkpoint threeplayer=run/model.safetensors``
scores other held-out volumes, rows and checkpoints.
"""
import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from MedSRLib.errors import InputError, MedSRError
from MedSRLib.grid.degradation import block_mean, crop_to_multiple
from MedSRLib.grid.intensity import Normaliser
from MedSRLib.io import read_volume
from MedSRLib.methods import RunSettings, get_method
from MedSRLib.progress import ProgressCallback, report
from .datasets import dataset_path, get_dataset
from .metrics import compare


PROTOCOL_MODES = ("isotropic", "thick")


def degrade_protocol(hr_array: np.ndarray, mode: str = "isotropic", scale: int = 2,
                     axis: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Steps 1–3 of the DATA.md evaluation protocol; returns (normalised HR, LR), both float32.

    1. float32, each axis cropped from its end to a multiple of ``scale``; 2. clipped to the 0.5 / 99.5 percentiles and
    mapped to [0, 1]; 3. ``isotropic``: mean of each scale³ block; ``thick``: mean of each run of ``scale`` slices along
    array ``axis``.
    """
    if mode not in PROTOCOL_MODES:
        raise InputError(f"Unknown degradation '{mode}'; choose one of {', '.join(PROTOCOL_MODES)}.")
    if int(scale) != scale or scale < 2:
        raise InputError(f"The protocol's scale must be a whole number of at least 2, not {scale}.")
    hr = np.asarray(hr_array, dtype=np.float32)
    if hr.ndim != 3:
        raise InputError(f"The protocol needs a 3D array, not shape {hr.shape}.")
    hr = crop_to_multiple(hr, (int(scale),) * 3)
    hr = Normaliser.fit(hr, clip=True).forward(hr)
    factors = [int(scale)] * 3 if mode == "isotropic" else [int(scale) if a == axis % 3 else 1 for a in range(3)]
    return hr, block_mean(hr, factors).astype(np.float32)


@dataclass(frozen=True)
class Degradation:
    mode: str          # "isotropic" or "thick"
    scale: int
    axis: int = 0      # the thick array axis

    @property
    def label(self) -> str:
        if self.mode == "isotropic":
            return f"isotropic ×{self.scale}"
        axis_name = ("first", "second", "third")[self.axis]
        return f"thick slices ×{self.scale} ({axis_name} array axis)"

    @property
    def key(self) -> str:
        """The command-line name: ``isotropic-2``, ``thick-4`` (first array axis) or ``thick-4-axis2``."""
        return f"{self.mode}-{self.scale}" + (f"-axis{self.axis}" if self.mode == "thick" and self.axis else "")

    @classmethod
    def from_key(cls, key: str) -> "Degradation":
        parts = key.split("-")
        try:
            mode, scale = parts[0], int(parts[1])
            axis = int(parts[2].removeprefix("axis")) if len(parts) == 3 and parts[2].startswith("axis") else 0
            if mode not in ("isotropic", "thick") or len(parts) > 3 or scale < 2 or axis not in (0, 1, 2) \
                    or (mode == "isotropic" and len(parts) == 3):
                raise ValueError
        except (IndexError, ValueError):
            raise MedSRError(f"Unknown degradation '{key}'; write e.g. isotropic-2, thick-4 or thick-4-axis1.") from None
        return cls(mode, scale, axis)

    def scale_xyz(self) -> Tuple[float, float, float]:
        """The (x, y, z) scale that undoes this degradation (array axis a is xyz index 2 − a)."""
        if self.mode == "isotropic":
            return (float(self.scale),) * 3
        values = [1.0, 1.0, 1.0]
        values[2 - self.axis] = float(self.scale)
        return tuple(values)


# The rows of the DATA.md reference table.
DEGRADATIONS = (Degradation("isotropic", 2), Degradation("isotropic", 4),
                Degradation("thick", 2), Degradation("thick", 4))


def evaluate_method(method_name: str, hr_array: np.ndarray, mode: str, scale: int, axis: int = 0,
                    settings: Optional[RunSettings] = None,
                    hr_spacing_xyz: Sequence[float] = (1.0, 1.0, 1.0)) -> Dict[str, float]:
    """Run the protocol for one method and one degradation: PSNR, fg-PSNR, SSIM, NRMSE (see metrics.compare) and the
    method's run time in seconds. The method sees the LR spacing: ``hr_spacing_xyz`` times the scale where degraded."""
    hr, lr = degrade_protocol(hr_array, mode, scale, axis)
    return _score(method_name, hr, lr, Degradation(mode, scale, axis), settings, hr_spacing_xyz)


def _score(method_name, hr, lr, degradation: Degradation, settings=None, hr_spacing_xyz=(1.0, 1.0, 1.0)):
    scale_xyz = degradation.scale_xyz()
    lr_spacing = tuple(float(s) * f for s, f in zip(hr_spacing_xyz, scale_xyz))
    started = time.perf_counter()
    sr = get_method(method_name).run(lr, scale_xyz, lr_spacing, settings or RunSettings())
    seconds = time.perf_counter() - started
    scores = compare(np.clip(sr, 0, 1), hr)
    scores["seconds"] = seconds
    return scores


def heldout_volume(name: str) -> np.ndarray:
    """The array of a held-out dataset; evaluating on a volume a model may have trained on is refused."""
    if get_dataset(name).split != "heldout":
        raise InputError(f"Dataset '{name}' is not held out; evaluate on a held-out volume such as colin27 or "
                         "heudiconv-epi.")
    return read_volume(dataset_path(name)).array


def reference_table(methods: Sequence[str], degradations: Sequence[Degradation] = DEGRADATIONS,
                    hr_array: Optional[np.ndarray] = None,
                    progress: Optional[ProgressCallback] = None,
                    checkpoints: Optional[Dict[str, str]] = None) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{degradation label: {method: scores}} on ``hr_array`` (Colin27 from the data cache by default); a learned
    method uses ``checkpoints[method]`` when given, else its shipped default model."""
    if hr_array is None:
        hr_array = read_volume(dataset_path("colin27")).array
    checkpoints = checkpoints or {}
    results = {}
    for row_index, degradation in enumerate(degradations):
        hr, lr = degrade_protocol(hr_array, degradation.mode, degradation.scale, degradation.axis)
        row = results.setdefault(degradation.label, {})
        for method_index, method in enumerate(methods):
            row[method] = _score(method, hr, lr, degradation, RunSettings(checkpoint=checkpoints.get(method)))
            report(row_index * len(methods) + method_index + 1, len(methods) * len(degradations), progress)
    return results


def markdown_table(results: Dict[str, Dict[str, Dict[str, float]]]) -> str:
    """The results in DATA.md's table format: one row per degradation, one 'PSNR / fg-PSNR / SSIM' column per method."""
    methods = list(next(iter(results.values())))
    lines = ["| degradation | " + " | ".join(f"{method} PSNR / fg-PSNR / SSIM" for method in methods) + " |",
             "|---|" + "---|" * len(methods)]
    for label, row in results.items():
        cells = [f"{row[m]['psnr']:.2f} / {row[m]['psnr_foreground']:.2f} / {row[m]['ssim']:.4f}" for m in methods]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _checkpoint_argument(text: str) -> Tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"'{text}' must look like METHOD=CHECKPOINT")
    method, checkpoint = text.split("=", 1)
    return method, checkpoint


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m MedSRLib.evaluation",
                                     description="Print the DATA.md reference table on a held-out volume.")
    parser.add_argument("--methods", nargs="+", default=["linear", "bspline"], help="registered method names")
    parser.add_argument("--volume", default="colin27", help="held-out dataset name (default colin27)")
    parser.add_argument("--rows", nargs="+", default=[d.key for d in DEGRADATIONS],
                        help="degradations, e.g. isotropic-2 thick-4 (default: the four rows of DATA.md)")
    parser.add_argument("--checkpoint", action="append", default=[], type=_checkpoint_argument,
                        metavar="METHOD=CHECKPOINT", help="a learned method's checkpoint (default: its shipped model)")
    parser.add_argument("--json", help="also write every score (with run times) to this file")
    arguments = parser.parse_args(argv)
    try:
        checkpoints = dict(arguments.checkpoint)
        unused = sorted(set(checkpoints) - set(arguments.methods))
        if unused:
            raise InputError(f"--checkpoint names {', '.join(unused)}, which --methods does not list.")
        degradations = [Degradation.from_key(key) for key in arguments.rows]
        results = reference_table(arguments.methods, degradations, heldout_volume(arguments.volume),
                                  lambda done, total: print(f"{done}/{total}", file=sys.stderr, flush=True),
                                  checkpoints)
    except MedSRError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"{arguments.volume}:")
    print(markdown_table(results))
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"volume": arguments.volume, "results": results}, indent=1))


if __name__ == "__main__":
    main()
