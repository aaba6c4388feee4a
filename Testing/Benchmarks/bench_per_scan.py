"""Per-scan through-plane methods (SMORE, CLADE) against cubic B-spline: the numbers in the README.

1. Colin27 held out, DATA.md protocol, thick slices ×s along the first array axis (box profile): PSNR / foreground PSNR
   / SSIM of each method and B-spline, and each method's run time (training + inference) for the default budget.
2. The real anisotropic ITK T1 (2×2×3 mm, no reference): edge sharpness across the thick axis (mm⁻¹, at the same
   borders for every result, found on the B-spline result) and mean PIQE of the through-plane slices (lower is better).

Run from the repository root (data from `medsr fetch-data --only colin27 itk-t1-aniso`):

    python Testing/Benchmarks/bench_per_scan.py [--methods smore clade] [--scales 2 4 6] [--threads N]
                                                [--budget-seconds S | --iterations N] [--skip-itk] [--json FILE]
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from MedSRLib import super_resolve  # noqa: E402
from MedSRLib.evaluation.datasets import dataset_path  # noqa: E402
from MedSRLib.evaluation.protocol import evaluate_method  # noqa: E402
from MedSRLib.grid.geometry import detect_thick_axis  # noqa: E402
from MedSRLib.methods import RunSettings  # noqa: E402
from MedSRLib.evaluation.metrics import edge_sharpness, find_edge_points, piqe_slicewise  # noqa: E402
from MedSRLib.io.volume_files import read_volume  # noqa: E402


def budget_options(arguments) -> dict:
    options = {}
    if arguments.budget_seconds is not None:
        options["budget_seconds"] = arguments.budget_seconds
    if arguments.iterations is not None:
        options["iterations"] = arguments.iterations
    return options


def colin27_rows(methods, scales, options):
    hr = read_volume(dataset_path("colin27")).array
    rows = {}
    for scale in scales:
        row = rows.setdefault(f"thick ×{scale}", {})
        for method in ["bspline", *methods]:
            settings = RunSettings(options={} if method == "bspline" else dict(options))
            scores = evaluate_method(method, hr, "thick", scale, axis=0, settings=settings)
            scores.update(settings.provenance)
            row[method] = scores
            print(f"thick ×{scale} {method}: {scores['psnr']:.2f} / {scores['psnr_foreground']:.2f} / "
                  f"{scores['ssim']:.4f} in {scores['seconds']:.0f} s {settings.provenance}", file=sys.stderr, flush=True)
    return rows


def itk_scores(methods, options):
    volume = read_volume(dataset_path("itk-t1-aniso"))
    thick = detect_thick_axis(volume.spacing)
    scale = thick.scale()
    in_plane_axis = next(axis for axis in range(3) if axis != thick.array_axis)
    results, points = {}, None
    for method in ["bspline", *methods]:
        started = time.perf_counter()
        result = super_resolve(volume, method, scale, **({} if method == "bspline" else options))
        seconds = time.perf_counter() - started
        if points is None:
            points = find_edge_points(result.array, result.spacing, axis=thick.array_axis)
        results[method] = {
            "edge_sharpness": edge_sharpness(result.array, result.spacing, axis=thick.array_axis, points=points),
            "piqe": piqe_slicewise(result.array, axis=in_plane_axis), "seconds": seconds,
            "per_scan_training": result.metadata.get("per_scan_training")}
        print(f"itk-t1-aniso {method}: {results[method]}", file=sys.stderr, flush=True)
    return {"scale": list(scale), "methods": results}


def markdown(rows, methods, itk):
    lines = []
    if rows:
        lines += ["| Colin27 thick slices (first array axis) | " + " | ".join(["bspline", *methods]) + " |",
                  "|---|" + "---|" * (len(methods) + 1)]
    for label, row in rows.items():
        cells = [f"{row[m]['psnr']:.2f} / {row[m]['psnr_foreground']:.2f} / {row[m]['ssim']:.4f}"
                 + ("" if m == "bspline" else f" ({row[m]['seconds']:.0f} s)") for m in ["bspline", *methods]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if itk:
        lines += ["", "| ITK T1 2×2×3 mm → 2 mm | " + " | ".join(itk["methods"]) + " |",
                  "|---|" + "---|" * len(itk["methods"])]
        for key, label in (("edge_sharpness", "edge sharpness across slices (mm⁻¹)"),
                           ("piqe", "PIQE (lower better)"), ("seconds", "run time (s)")):
            lines.append(f"| {label} | " + " | ".join(f"{scores[key]:.3f}" if key == "edge_sharpness" else
                                                   f"{scores[key]:.1f}" for scores in itk["methods"].values()) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["smore", "clade"])
    parser.add_argument("--scales", nargs="*", type=int, default=[2, 4, 6],
                        help="Colin27 thick-slice factors (none: only the ITK T1)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--budget-seconds", type=float, help="time budget of each whole run (default: each method's)")
    parser.add_argument("--iterations", type=int, help="training iterations per run")
    parser.add_argument("--skip-itk", action="store_true", help="leave out the ITK T1 no-reference scores")
    parser.add_argument("--json", help="also write all numbers to this file")
    arguments = parser.parse_args(argv)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    options = budget_options(arguments)
    environment = {"nproc": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                   "load_average_at_start": os.getloadavg(), "cuda": torch.cuda.is_available()}
    print(f"environment: {environment}", file=sys.stderr, flush=True)
    rows = colin27_rows(arguments.methods, arguments.scales, options)
    itk = None if arguments.skip_itk else itk_scores(arguments.methods, options)
    environment["load_average_at_end"] = os.getloadavg()
    print(markdown(rows, arguments.methods, itk))
    print(f"\nenvironment: {environment}")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"environment": environment, "colin27": rows, "itk": itk},
                                                   indent=2, default=str))


if __name__ == "__main__":
    main()
