"""TransMRSR (pretrained) beside SMORE (trained on the scan) and the interpolations, on held-out Colin27 thick ×4.

1. Time: CPU seconds (process time, all threads) and wall seconds to super-resolve a 181×217×45 thick-slice volume
   (Colin27 area-averaged by 4 along its first array axis, spacing 1×1×4 mm) with ``--scale auto``: TransMRSR, and SMORE
   at its default budget (3000 iterations). With ``--smore-iterations N`` below the default, SMORE trains N iterations
   and its training time is scaled by 3000 / N (inference added as measured); the output says so.
2. Scores: the DATA.md protocol on Colin27, thick ×4 along the first array axis: PSNR / foreground PSNR / SSIM of
   B-spline, Lanczos, TransMRSR and (unless ``--skip-smore-scores``) SMORE at the iterations it ran.
3. With ``--itk`` (instead of 1 and 2): the real anisotropic ITK T1 (2×2×3 mm, no reference) super-resolved ×4 along
   its thick axis by B-spline, Lanczos, SMORE and TransMRSR: mean through-plane PIQE and edge sharpness across the
   slices at B-spline's borders. Its spacing ratio is 1.5, a factor no TransMRSR model serves, so every method is asked
   for ×4, the smallest factor a shipped model serves, past the ratio (0.75 mm slices; ``force_scale`` for SMORE and
   TransMRSR).

Run from the repository root (data from `medsr fetch-data --only colin27 itk-t1-aniso`):

    python Testing/Benchmarks/bench_transmrsr.py [--checkpoint transmrsr-x4-cpu] [--threads 1]
                                                 [--smore-iterations 3000] [--skip-smore-scores] [--itk] [--json FILE]
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from MedSRLib import super_resolve  # noqa: E402
from MedSRLib.evaluation.datasets import dataset_path  # noqa: E402
from MedSRLib.evaluation.leaderboard import NoReferenceScan  # noqa: E402
from MedSRLib.evaluation.protocol import evaluate_method, no_reference_scores  # noqa: E402
from MedSRLib.grid.degradation import block_mean  # noqa: E402
from MedSRLib.io.volume import Volume  # noqa: E402
from MedSRLib.io.volume_files import read_volume  # noqa: E402
from MedSRLib.methods import RunSettings  # noqa: E402
from MedSRLib.methods.smore import Smore  # noqa: E402

FACTOR = 4


def thick_input(hr: np.ndarray) -> Volume:
    """Colin27 (181×217×181, x×y×z) area-averaged by 4 along its first array axis: 181×217×45 at 1×1×4 mm."""
    usable = hr[:hr.shape[0] // FACTOR * FACTOR].astype(np.float32)
    return Volume(block_mean(usable, (FACTOR, 1, 1)), (1.0, 1.0, float(FACTOR)))


def timed(volume: Volume, method: str, options: dict) -> dict:
    """Seconds of one ``super_resolve`` at the spacing's scale: process (CPU, all threads) and wall."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = super_resolve(volume, method, "auto", **options)
    return {"cpu_seconds": time.process_time() - cpu, "wall_seconds": time.perf_counter() - wall,
            "output_shape": list(result.array.shape), "per_scan_training": result.metadata.get("per_scan_training")}


def itk_scores(transmrsr_options: dict, smore_options: dict) -> dict:
    """{method: {piqe, edge_sharpness, seconds}} on the ITK T1 super-resolved ×FACTOR along its thick axis."""
    volume = read_volume(dataset_path("itk-t1-aniso"))
    scan = NoReferenceScan.prepare(volume.array, volume.spacing, factor=FACTOR)
    past_ratio = {"force_scale": True}  # through-plane methods refuse a factor beyond the spacing ratio without it
    scores = {}
    for method, options in (("bspline", {}), ("lanczos", {}), ("smore", {**smore_options, **past_ratio}),
                            ("transmrsr", {**transmrsr_options, **past_ratio})):
        started = time.perf_counter()
        result = super_resolve(scan.volume, method, scan.row.scale_xyz(), **options)
        seconds = time.perf_counter() - started
        scores[method] = {**no_reference_scores(result.array, scan.row, scan.borders, result.spacing),
                          "seconds": seconds}
        print(f"itk-t1-aniso ×{FACTOR} {method}: {scores[method]}", file=sys.stderr, flush=True)
    return scores


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="TransMRSR model (default: the catalog's ×4 model)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--smore-iterations", type=int, default=Smore.default_iterations,
                        help=f"SMORE training iterations (default: its budget, {Smore.default_iterations})")
    parser.add_argument("--skip-smore-scores", action="store_true", help="time SMORE but do not score it")
    parser.add_argument("--itk", action="store_true", help="only the ITK T1 no-reference comparison (3. above)")
    parser.add_argument("--json", help="also write all numbers to this file")
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    environment = {"nproc": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                   "load_average_at_start": os.getloadavg()}
    print(f"environment: {environment}", file=sys.stderr, flush=True)
    transmrsr_options = {} if arguments.checkpoint is None else {"checkpoint": arguments.checkpoint}
    smore_options = {"iterations": arguments.smore_iterations}
    if arguments.itk:
        scores = itk_scores(transmrsr_options, smore_options)
        environment["load_average_at_end"] = os.getloadavg()
        print(f"| ITK T1 2×2×3 mm, thick axis ×{FACTOR} (0.75 mm slices) | PIQE | edge sharpness (mm⁻¹) | seconds |")
        print("|---|---|---|---|")
        for method, row in scores.items():
            print(f"| {method} | {row['piqe']:.1f} | {row['edge_sharpness']:.3f} | {row['seconds']:.0f} |")
        print(f"\nenvironment: {environment}")
        if arguments.json:
            Path(arguments.json).write_text(json.dumps({"environment": environment, "itk": scores}, indent=2))
        return
    hr = read_volume(dataset_path("colin27")).array
    volume = thick_input(hr)

    times = {"transmrsr": timed(volume, "transmrsr", transmrsr_options), "smore": timed(volume, "smore", smore_options)}
    training = times["smore"]["per_scan_training"]
    scaled = arguments.smore_iterations < Smore.default_iterations
    if scaled:
        # Training time scales with the iterations (its share of the run from the wall clock); the rest is as measured.
        factor = Smore.default_iterations / arguments.smore_iterations
        training_share = training["seconds"] / times["smore"]["wall_seconds"]
        for key in ("cpu_seconds", "wall_seconds"):
            times["smore"][f"default_budget_{key}"] = times["smore"][key] * (1 + training_share * (factor - 1))
    for method, measured in times.items():
        print(f"time {method}: {measured}", file=sys.stderr, flush=True)

    scores = {}
    for method in ["bspline", "lanczos", "transmrsr"] + ([] if arguments.skip_smore_scores else ["smore"]):
        options = {"transmrsr": transmrsr_options, "smore": smore_options}.get(method, {})
        settings = RunSettings(checkpoint=options.get("checkpoint"),
                               options={key: value for key, value in options.items() if key != "checkpoint"})
        scores[method] = evaluate_method(method, hr, "thick", FACTOR, axis=0, settings=settings)
        print(f"thick ×{FACTOR} {method}: {scores[method]['psnr']:.2f} / {scores[method]['psnr_foreground']:.2f} / "
              f"{scores[method]['ssim']:.4f}", file=sys.stderr, flush=True)

    environment["load_average_at_end"] = os.getloadavg()
    shape = "×".join(str(size) for size in reversed(volume.array.shape))
    print(f"| {shape} thick input, scale auto, {environment['torch_threads']} thread(s) | CPU s | wall s |")
    print("|---|---|---|")
    print(f"| transmrsr | {times['transmrsr']['cpu_seconds']:.0f} | {times['transmrsr']['wall_seconds']:.0f} |")
    smore = times["smore"]
    if scaled:
        print(f"| smore, default budget ({Smore.default_iterations} iterations), SCALED from a measured run of "
              f"{arguments.smore_iterations} iterations | {smore['default_budget_cpu_seconds']:.0f} | "
              f"{smore['default_budget_wall_seconds']:.0f} |")
    else:
        print(f"| smore, default budget ({Smore.default_iterations} iterations) | {smore['cpu_seconds']:.0f} | "
              f"{smore['wall_seconds']:.0f} |")
    print(f"\n| Colin27 thick ×{FACTOR} (first array axis) | PSNR | fg-PSNR | SSIM |")
    print("|---|---|---|---|")
    for method, row in scores.items():
        label = f"smore ({arguments.smore_iterations} iterations)" if method == "smore" else method
        print(f"| {label} | {row['psnr']:.2f} | {row['psnr_foreground']:.2f} | {row['ssim']:.4f} |")
    print(f"\nenvironment: {environment}")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps({"environment": environment, "times": times, "scores": scores},
                                                   indent=2, default=str))


if __name__ == "__main__":
    main()
