"""The evaluation protocol (docs/protocol.md): degrade a held-out volume, super-resolve it back, score it against the original.

``python -m MedSRLib.evaluation --methods linear bspline`` prints the Colin27 reference table as Markdown;
``--rows isotropic-2.5 inplane-4 thick-8`` picks rows, and
``--volume heudiconv-epi --rows isotropic-2 --methods bspline threeplayer --checkpoint threeplayer=run/model.safetensors``
scores other held-out volumes and checkpoints. docs/protocol.md explains each step.
"""
import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from MedSRLib.errors import InputError, MedSRError
from MedSRLib.grid.degradation import area_average, crop_to_multiple, factor_fraction
from MedSRLib.grid.geometry import MAX_SCALE
from MedSRLib.grid.intensity import Normaliser
from MedSRLib.io import read_volume
from MedSRLib.methods import RunSettings, get_method
from MedSRLib.progress import ProgressCallback, report
from .datasets import dataset_path, get_dataset
from .metrics import compare, edge_sharpness, find_edge_points, piqe_slicewise


PROTOCOL_MODES = ("isotropic", "inplane", "thick")
AXIS_NAMES = ("first", "second", "third")
KEY_PATTERN = re.compile(r"(isotropic|inplane|thick)-([0-9]+(?:\.[0-9]+)?)(?:-axis([0-9]))?")
# PIQE scores each 2D slice (about 0.1 s per Colin27 slice); every 4th slice keeps a row's scoring to seconds.
PIQE_SLICE_STEP = 4
UNIT_SPACING = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class Degradation:
    """One row of the protocol: which array axes are degraded, and by how much.

    ``isotropic``: every axis; ``inplane``: the two axes of each slice, the slices stacked along array ``axis`` (a 2D
    slice-wise acquisition); ``thick``: array ``axis`` only (thick slices). ``scale`` may be a simple fraction (2.5).
    """
    mode: str
    scale: float
    axis: int = 0      # thick: the thick array axis; inplane: the array axis the slices are stacked along

    def __post_init__(self):
        if self.mode not in PROTOCOL_MODES:
            raise InputError(f"Unknown degradation '{self.mode}'; choose one of {', '.join(PROTOCOL_MODES)}.")
        if not 1 < self.scale <= MAX_SCALE:
            raise InputError(f"The protocol's scale must be above 1 and at most {MAX_SCALE:g}, not {self.scale}.")
        factor_fraction(self.scale)  # refuses scales that are not simple fractions
        if self.axis not in (0, 1, 2) or (self.mode == "isotropic" and self.axis):
            raise InputError(f"Array axis {self.axis} does not fit the '{self.mode}' degradation; isotropic rows "
                             "take no axis, the others 0, 1 or 2.")

    @property
    def label(self) -> str:
        if self.mode == "isotropic":
            return f"isotropic ×{self.scale:g}"
        if self.mode == "inplane":
            return f"in-plane ×{self.scale:g}, slices along the {AXIS_NAMES[self.axis]} array axis"
        return f"thick slices ×{self.scale:g} ({AXIS_NAMES[self.axis]} array axis)"

    @property
    def key(self) -> str:
        """The command-line name: ``isotropic-2.5``, ``inplane-4``, ``thick-4`` (slices along the first array axis) or
        ``thick-4-axis2``."""
        return f"{self.mode}-{self.scale:g}" + (f"-axis{self.axis}" if self.axis else "")

    @classmethod
    def from_key(cls, key: str) -> "Degradation":
        match = KEY_PATTERN.fullmatch(key)
        if not match:
            raise InputError(f"Unknown degradation '{key}'; write MODE-SCALE or MODE-SCALE-axisN with MODE isotropic, "
                             "inplane or thick, like isotropic-2.5, inplane-4, thick-8 or thick-4-axis1.")
        mode, scale, axis = match.groups()
        return cls(mode, float(scale), int(axis or 0))

    def factors(self) -> Tuple[float, float, float]:
        """The degradation factor of each array axis (k, j, i)."""
        degraded = {"isotropic": {0, 1, 2}, "inplane": {0, 1, 2} - {self.axis}, "thick": {self.axis}}[self.mode]
        return tuple(float(self.scale) if a in degraded else 1.0 for a in range(3))

    def degraded_axes(self) -> Tuple[int, ...]:
        return tuple(axis for axis, factor in enumerate(self.factors()) if factor > 1)

    def piqe_slice_axis(self) -> int:
        """No-reference PIQE scores the slices perpendicular to this array axis: for thick slices the first in-plane
        axis, so that every scored slice runs through the thick axis (a through-plane slice, where thick slices
        show); for in-plane rows the slice axis (the degraded slices themselves); for isotropic rows the first axis."""
        if self.mode == "thick":
            return next(axis for axis in range(3) if axis != self.axis)
        return self.axis

    def scale_xyz(self) -> Tuple[float, float, float]:
        """The (x, y, z) scale that undoes this degradation (array axis a is xyz index 2 − a)."""
        return self.factors()[::-1]

    def crop_multiple(self) -> int:
        """Every axis is cropped to a multiple of this: the largest numerator of the factors as reduced fractions
        (×2 → 2, ×2.5 = 5/2 → 5), so the LR grid tiles the HR grid exactly and the method's output has the HR
        shape."""
        return max(factor_fraction(f).numerator for f in self.factors())

    def apply(self, hr_array: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Steps 1–3 of the protocol; returns (normalised HR, LR), both float32.

        1. float32, clipped to the whole volume's 0.5 / 99.5 percentiles and mapped to [0, 1]; 2. every axis cropped
        from its end to a multiple of :meth:`crop_multiple`; 3. the exact area average over the LR voxels
        (``area_average``). Normalising before the crop gives every row the same reference intensities (and is how the
        reference table was made: Colin27's 99.5 percentile is 178 uncropped but 179 in the thick ×8 crop).
        """
        hr = np.asarray(hr_array, dtype=np.float32)
        if hr.ndim != 3:
            raise InputError(f"The protocol needs a 3D array, not shape {hr.shape}.")
        hr = Normaliser.fit(hr, clip=True).forward(hr)
        hr = crop_to_multiple(hr, (self.crop_multiple(),) * 3)
        return hr, area_average(hr, self.factors())


def degrade_protocol(hr_array: np.ndarray, mode: str = "isotropic", scale: float = 2,
                     axis: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Steps 1–3 of the evaluation protocol (docs/protocol.md) for one degradation (see :class:`Degradation`); returns
    (normalised HR, LR), both float32."""
    return Degradation(mode, scale, axis).apply(hr_array)


# The rows of the reference table (docs/protocol.md).
DEGRADATIONS = tuple(Degradation.from_key(key) for key in (
    "isotropic-2", "isotropic-2.5", "isotropic-3", "isotropic-4", "inplane-2", "inplane-4", "thick-2", "thick-4",
    "thick-8"))


def reference_borders(hr: np.ndarray, degradation: Degradation,
                      spacing_xyz: Sequence[float] = UNIT_SPACING) -> np.ndarray:
    """Where a row's edge sharpness is measured, the same voxels for every method: the strong borders of the HR
    reference crossed along a degraded axis (``find_edge_points`` for each degraded axis; for thick slices, the borders
    across the thick axis)."""
    return np.concatenate([find_edge_points(hr, spacing_xyz, axis=axis) for axis in degradation.degraded_axes()])


def no_reference_scores(output: np.ndarray, degradation: Degradation, borders: np.ndarray,
                        spacing_xyz: Sequence[float] = UNIT_SPACING) -> Dict[str, float]:
    """A row's no-reference scores of an output on the HR grid: ``piqe``, the mean PIQE (lower is better) over every
    PIQE_SLICE_STEP-th slice perpendicular to ``degradation.piqe_slice_axis()`` (for thick slices, the through-plane
    slices), and ``edge_sharpness`` (mm⁻¹, higher is sharper) at ``borders`` (see :func:`reference_borders`)."""
    axis = degradation.piqe_slice_axis()
    scored_slices = np.take(output, range(0, output.shape[axis], PIQE_SLICE_STEP), axis=axis)
    return {"piqe": piqe_slicewise(scored_slices, axis),
            "edge_sharpness": edge_sharpness(output, spacing_xyz, points=borders)}


def evaluate_method(method_name: str, hr_array: np.ndarray, mode: str, scale: float, axis: int = 0,
                    settings: Optional[RunSettings] = None,
                    hr_spacing_xyz: Sequence[float] = UNIT_SPACING) -> Dict[str, float]:
    """Run the protocol for one method and one degradation: PSNR, fg-PSNR, SSIM, NRMSE (see metrics.compare) and the
    method's run time in seconds. The method sees the LR spacing: ``hr_spacing_xyz`` times the scale where degraded."""
    degradation = Degradation(mode, scale, axis)
    hr, lr = degradation.apply(hr_array)
    return _score(method_name, hr, lr, degradation, settings, hr_spacing_xyz)


def _score(method_name, hr, lr, degradation: Degradation, settings=None, hr_spacing_xyz=UNIT_SPACING, borders=None):
    """compare's scores and the run time, with :func:`no_reference_scores` at ``borders`` when they are given."""
    sr, seconds = super_resolve_row(method_name, lr, degradation, settings, hr_spacing_xyz)
    scores = compare(sr, hr)
    if borders is not None:
        scores.update(no_reference_scores(sr, degradation, borders, hr_spacing_xyz))
    scores["seconds"] = seconds
    return scores


def super_resolve_row(method_name: str, lr: np.ndarray, degradation: Degradation,
                      settings: Optional[RunSettings] = None,
                      hr_spacing_xyz: Sequence[float] = UNIT_SPACING) -> Tuple[np.ndarray, float]:
    """Step 4 of the protocol: the method's output on the HR grid, clipped to [0, 1], and its run time in seconds."""
    scale_xyz = degradation.scale_xyz()
    lr_spacing = tuple(float(s) * f for s, f in zip(hr_spacing_xyz, scale_xyz))
    started = time.perf_counter()
    sr = get_method(method_name).run(lr, scale_xyz, lr_spacing, settings or RunSettings())
    return np.clip(sr, 0, 1), time.perf_counter() - started


def heldout_volume(name: str) -> np.ndarray:
    """The array of a held-out dataset; evaluating on a volume a model may have trained on is refused."""
    if get_dataset(name).split != "heldout":
        raise InputError(f"Dataset '{name}' is not held out; evaluate on a held-out volume such as colin27 or "
                         "heudiconv-epi.")
    return read_volume(dataset_path(name)).array


def reference_table(methods: Sequence[str], degradations: Sequence[Degradation] = DEGRADATIONS,
                    hr_array: Optional[np.ndarray] = None,
                    progress: Optional[ProgressCallback] = None,
                    checkpoints: Optional[Dict[str, str]] = None,
                    no_reference: bool = False,
                    method_options: Optional[Dict[str, Dict[str, object]]] = None
                    ) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{degradation label: {method: scores}} on ``hr_array`` (Colin27 from the data cache by default); a learned
    method uses ``checkpoints[method]`` when given, else its shipped default model, and each method its
    ``method_options`` (its own options, e.g. {"rdst": {"two_planes": True}}). ``no_reference`` adds
    :func:`no_reference_scores` at the borders of each row's reference."""
    if hr_array is None:
        hr_array = read_volume(dataset_path("colin27")).array
    checkpoints = checkpoints or {}
    method_options = method_options or {}
    for method, options in method_options.items():
        get_method(method).check_options(options)
    results = {}
    for row_index, degradation in enumerate(degradations):
        hr, lr = degradation.apply(hr_array)
        borders = reference_borders(hr, degradation) if no_reference else None
        row = results.setdefault(degradation.label, {})
        for method_index, method in enumerate(methods):
            settings = RunSettings(checkpoint=checkpoints.get(method), options=dict(method_options.get(method, {})))
            row[method] = _score(method, hr, lr, degradation, settings, borders=borders)
            report(row_index * len(methods) + method_index + 1, len(methods) * len(degradations), progress)
    return results


def markdown_table(results: Dict[str, Dict[str, Dict[str, float]]]) -> str:
    """The results in the reference table's format: one row per degradation, one 'PSNR / fg-PSNR / SSIM' column per method."""
    return _table_per_method(results, "PSNR / fg-PSNR / SSIM", lambda scores: (
        f"{scores['psnr']:.2f} / {scores['psnr_foreground']:.2f} / {scores['ssim']:.4f}"))


def no_reference_table(results: Dict[str, Dict[str, Dict[str, float]]]) -> str:
    """The no-reference scores of results made with ``no_reference``: one 'PIQE / edge sharpness' column per method."""
    return _table_per_method(results, "PIQE / edge sharpness (mm⁻¹)",
                             lambda scores: f"{scores['piqe']:.2f} / {scores['edge_sharpness']:.3f}")


def _table_per_method(results: Dict[str, Dict[str, Dict[str, float]]], heading: str, cell) -> str:
    """Markdown: one row per degradation, one column per method headed '<method> <heading>', ``cell(scores)`` in it."""
    methods = list(next(iter(results.values())))
    lines = ["| degradation | " + " | ".join(f"{method} {heading}" for method in methods) + " |",
             "|---|" + "---|" * len(methods)]
    for label, row in results.items():
        lines.append(f"| {label} | " + " | ".join(cell(row[method]) for method in methods) + " |")
    return "\n".join(lines)


def _checkpoint_argument(text: str) -> Tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"'{text}' must look like METHOD=CHECKPOINT")
    method, checkpoint = text.split("=", 1)
    return method, checkpoint


def _option_argument(text: str) -> Tuple[str, str, str]:
    method, _, assignment = text.partition(":")
    name, equals, value = assignment.partition("=")
    if not (method and name and equals):
        raise argparse.ArgumentTypeError(f"'{text}' must look like METHOD:OPTION=VALUE")
    return method, name, value


def method_options_from(arguments: Sequence[Tuple[str, str, str]]) -> Dict[str, Dict[str, object]]:
    """``--option`` texts as {method: {option: value}}, each value converted to its declared kind; one sentence for
    an option the method does not declare."""
    options: Dict[str, Dict[str, object]] = {}
    for method, name, text in arguments:
        declared = {option.name: option for option in get_method(method).options}
        options.setdefault(method, {})[name] = declared[name].from_text(text) if name in declared else text
    for method, given in options.items():
        get_method(method).check_options(given)
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m MedSRLib.evaluation",
                                     description="Print the evaluation protocol's table (docs/protocol.md) on a held-out volume.")
    parser.add_argument("--methods", nargs="+",
                        help="registered method names (default linear bspline); with --all, interpolation methods and "
                             "shipped model names (default: all of them)")
    parser.add_argument("--volume", default="colin27", help="held-out dataset name (default colin27)")
    parser.add_argument("--rows", nargs="+", default=[d.key for d in DEGRADATIONS],
                        help="degradations, e.g. isotropic-2.5 inplane-4 thick-8 (default: the nine rows of docs/protocol.md)")
    parser.add_argument("--checkpoint", action="append", default=[], type=_checkpoint_argument,
                        metavar="METHOD=CHECKPOINT", help="a learned method's checkpoint (default: its shipped model)")
    parser.add_argument("--option", action="append", default=[], type=_option_argument,
                        metavar="METHOD:OPTION=VALUE",
                        help="one of a method's own options (`medsr methods`), e.g. rdst:two_planes=true")
    parser.add_argument("--no-reference", action="store_true",
                        help="also score each output without the reference and print a second table: mean PIQE over "
                             "the slices through the degraded axes (through-plane slices for thick rows) and edge "
                             "sharpness at the reference's borders across them (--all always scores them)")
    parser.add_argument("--json", help="also write every score (with run times) to this file")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_table(build_parser().parse_args(argv))


def run_table(arguments: argparse.Namespace) -> None:
    """Print the table the parsed command line asks for (and write its --json)."""
    arguments.methods = arguments.methods or ["linear", "bspline"]
    try:
        checkpoints = dict(arguments.checkpoint)
        method_options = method_options_from(arguments.option)
        for flag, named in (("--checkpoint", checkpoints), ("--option", method_options)):
            unused = sorted(set(named) - set(arguments.methods))
            if unused:
                raise InputError(f"{flag} names {', '.join(unused)}, which --methods does not list.")
        degradations = [Degradation.from_key(key) for key in arguments.rows]
        results = reference_table(arguments.methods, degradations, heldout_volume(arguments.volume),
                                  lambda done, total: print(f"{done}/{total}", file=sys.stderr, flush=True),
                                  checkpoints, arguments.no_reference, method_options)
    except MedSRError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"{arguments.volume}:")
    print(markdown_table(results))
    if arguments.no_reference:
        print(f"\n{arguments.volume}, no-reference scores (PIQE lower is better, edge sharpness higher is sharper):")
        print(no_reference_table(results))
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"volume": arguments.volume, "results": results}, indent=1))


if __name__ == "__main__":
    main()
