"""Slice-profile estimation on held-out Colin27, and SMORE trained with the estimate vs told a wrong profile.

Colin27 is normalised and cropped as the evaluation protocol does for thick ×4 (``Degradation.apply``), then made
thick ×4 along the first array axis with a chosen slice profile (``thicken_slices``), not the protocol's box.

    python Testing/Benchmarks/bench_slice_profile.py                  # the estimates (seconds)
    OMP_NUM_THREADS=1 python Testing/Benchmarks/bench_slice_profile.py --smore --iterations 600
        # also SMORE on the Gaussian FWHM 3 mm scan: trained with the estimated profile, and told a box of the slice
        # spacing (4 mm) or a thin box (2 mm, 2 mm gap); the same budget (--iterations or --budget-seconds) each
"""
import argparse
import time

import numpy as np

from MedSRLib.evaluation.metrics import compare
from MedSRLib.evaluation.protocol import Degradation, heldout_volume, super_resolve_row
from MedSRLib.grid.degradation import thicken_slices
from MedSRLib.grid.slice_profile_estimation import estimate_slice_profile
from MedSRLib.methods import RunSettings

FACTOR = 4
# (label, shape, FWHM in mm) of the simulated acquisitions; slices FACTOR mm apart, so the gap is FACTOR − FWHM.
ACQUISITIONS = (("Gaussian, FWHM 3 mm", "gaussian", 3.0), ("box 4 mm", "box", 4.0),
                ("box 3 mm, 1 mm gap", "box", 3.0))


def acquire(hr: np.ndarray, shape: str, fwhm: float) -> np.ndarray:
    return thicken_slices(hr, 0, FACTOR, shape, gap=FACTOR - fwhm)


def print_estimates(hr: np.ndarray) -> None:
    print("| acquisition (truth) | shape told | estimated FWHM (error) | estimated gap | seconds |")
    print("|---|---|---|---|---|")
    for label, true_shape, fwhm in ACQUISITIONS:
        acquired = acquire(hr, true_shape, fwhm)
        for shape in ("gaussian", "box"):
            started = time.perf_counter()
            estimate = estimate_slice_profile(acquired, 0, FACTOR, shape)
            seconds = time.perf_counter() - started
            print(f"| {label} | {shape} | {estimate.fwhm:.2f} mm ({100 * (estimate.fwhm / fwhm - 1):+.0f} %) | "
                  f"{estimate.gap:.2f} mm | {seconds:.2f} |", flush=True)


def print_smore_comparison(hr: np.ndarray, budget: dict) -> None:
    """``budget``: SMORE's iterations and / or budget_seconds options, the same for each SMORE run."""
    degradation = Degradation("thick", FACTOR)
    scan = acquire(hr, "gaussian", 3.0)
    runs = (("cubic B-spline", "bspline", {}),
            ("SMORE, estimated profile (default)", "smore", budget),
            ("SMORE, told a box of the slice spacing", "smore", {**budget, "profile": "box", "gap": 0.0}),
            ("SMORE, told a thin box (2 mm gap)", "smore", {**budget, "profile": "box", "gap": 2.0}))
    print("| run | profile trained with | PSNR / fg-PSNR / SSIM | iterations | seconds |")
    print("|---|---|---|---|---|")
    for label, method, options in runs:
        settings = RunSettings(options=options)
        output, seconds = super_resolve_row(method, scan, degradation, settings)
        scores = compare(output, hr)
        profile = settings.provenance.get("slice_profile")
        used = "—" if profile is None else f"{profile['profile']} FWHM {profile['fwhm_mm']:.2f} mm"
        iterations = settings.provenance.get("per_scan_training", {}).get("iterations", "—")
        print(f"| {label} | {used} | {scores['psnr']:.2f} / {scores['psnr_foreground']:.2f} / {scores['ssim']:.4f} | "
              f"{iterations} | {seconds:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smore", action="store_true", help="also run the SMORE comparison (minutes)")
    parser.add_argument("--iterations", type=int, help="SMORE's training iterations, each run")
    parser.add_argument("--budget-seconds", type=float, help="SMORE's time budget, each run")
    arguments = parser.parse_args()
    hr, _ = Degradation("thick", FACTOR).apply(heldout_volume("colin27"))
    print(f"Colin27, normalised and cropped to {hr.shape}, thick ×{FACTOR} along the first array axis")
    print_estimates(hr)
    if arguments.smore:
        budget = {"iterations": arguments.iterations, "budget_seconds": arguments.budget_seconds}
        print_smore_comparison(hr, {name: value for name, value in budget.items() if value is not None})


if __name__ == "__main__":
    main()
