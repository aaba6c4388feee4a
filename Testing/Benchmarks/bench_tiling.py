"""Tiled ×2 inference, MedSR's engine against MONAI's sliding_window_inference, same network, windows and blending.

Each engine runs in its own child process on the same input file. Peak memory is what the inference call added to
the process: the peak resident set size during the call (Linux VmHWM, reset through /proc/self/clear_refs just before
the call) minus the resident set size just before it. "monai" is given MedSR's Gaussian weight map (roi_weight_map),
so both engines compute the same thing; "monai-default" uses MONAI's own map (sigma from the input window, resized by
nearest neighbour to the output window, clamped at 1e-3). Run from the repository root:

    python Testing/Benchmarks/bench_tiling.py [--size 128] [--patch 32] [--overlap 8] [--batch 4] [--threads N]
                                              [--repeats 1]
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from MedSRLib.nn.nets.rrdb import RRDBNet3d  # noqa: E402
from MedSRLib.engine.tiling import TilingOptions, estimate_memory, run_tiled  # noqa: E402
from MedSRLib.engine.tiling import _gaussian_profile  # noqa: E402  (MONAI gets the very same weights)

SCALE = 2
ENGINES = ("medsr", "monai", "monai-default")
SMALL_RRDB = {"features": 16, "growth": 8, "blocks": 1, "scale": SCALE}


def smooth_random_volume(size: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter
    noise = np.random.default_rng(0).random((size,) * 3, dtype=np.float32)
    smooth = gaussian_filter(noise, sigma=3)
    return ((smooth - smooth.min()) / (smooth.max() - smooth.min())).astype(np.float32)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"{field}:\s+(\d+) kB", status.read()).group(1))


def start_peak_measurement() -> int:
    """Reset the peak resident set size and return the current one, in bytes."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    return _status_kib("VmHWM") * 1024


def run_engine(engine: str, args) -> dict:
    """Child process: one engine, one timed call; writes the output next to the input."""
    torch.manual_seed(0)
    model = RRDBNet3d(**SMALL_RRDB).eval()
    image = np.load(args.input)
    options = TilingOptions(patch=args.patch, stride=args.patch - args.overlap, blend="gaussian",
                            batch_size=args.batch, device="cpu")
    if engine != "medsr":
        from monai.inferers import sliding_window_inference
        profile = _gaussian_profile(args.patch * SCALE).float()
        medsr_weights = profile[:, None, None] * profile[None, :, None] * profile[None, None, :]
    rss_before = start_peak_measurement()
    start = time.perf_counter()
    if engine == "medsr":
        output = run_tiled(model, image, (SCALE,) * 3, options)
    else:
        with torch.inference_mode():
            output = sliding_window_inference(
                torch.from_numpy(image)[None, None], roi_size=(args.patch,) * 3, sw_batch_size=args.batch,
                predictor=model, overlap=args.overlap / args.patch, mode="gaussian", sigma_scale=0.125,
                roi_weight_map=medsr_weights if engine == "monai" else None)
        output = output[0, 0].numpy()
    seconds = time.perf_counter() - start
    np.save(args.output, output)
    return {"engine": engine, "seconds": seconds, "voxels": int(output.size),
            "peak_bytes": peak_rss_bytes() - rss_before,
            "estimate_bytes": estimate_memory(image.shape, (SCALE,) * 3, options) if engine == "medsr" else None}


def child_command(engine: str, args, input_path: Path, output_path: Path):
    return [sys.executable, __file__, "--engine", engine, "--input", str(input_path), "--output", str(output_path),
            "--patch", str(args.patch), "--overlap", str(args.overlap), "--batch", str(args.batch),
            "--threads", str(args.threads)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="input edge length in voxels")
    parser.add_argument("--patch", type=int, default=32, help="window edge in input voxels")
    parser.add_argument("--overlap", type=int, default=8, help="window overlap in input voxels")
    parser.add_argument("--batch", type=int, default=4, help="windows per batch")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=1, help="runs per engine; the fastest is reported")
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.engine:
        print(json.dumps(run_engine(args.engine, args)))
        return

    engines = ["medsr"]
    try:
        import monai
        engines += ["monai", "monai-default"]
    except ImportError:
        print("MONAI is not installed; measuring MedSR only (pip install monai torch==2.13.0).")
    print(f"input {args.size}³ ×{SCALE}, small RRDB {SMALL_RRDB}, patch {args.patch}, overlap {args.overlap}, "
          f"batch {args.batch}, gaussian blending, CPU, {args.threads} threads, torch {torch.__version__}"
          + (f", MONAI {monai.__version__}" if "monai" in engines else ""))
    with tempfile.TemporaryDirectory() as work:
        input_path = Path(work) / "input.npy"
        np.save(input_path, smooth_random_volume(args.size))
        runs = {engine: [] for engine in engines}
        for _ in range(args.repeats):  # engines take turns, so load from other processes hits them alike
            for engine in engines:
                output_path = Path(work) / f"{engine}.npy"
                child = subprocess.run(child_command(engine, args, input_path, output_path), check=True,
                                       capture_output=True, text=True)
                runs[engine].append(json.loads(child.stdout.strip().splitlines()[-1]))
        results = {engine: min(engine_runs, key=lambda run: run["seconds"]) for engine, engine_runs in runs.items()}
        medsr_output = np.load(Path(work) / "medsr.npy")
        print(f"output range [{medsr_output.min():.3f}, {medsr_output.max():.3f}]")
        print(f"best of {args.repeats} run(s) per engine")
        print(f"{'engine':14} {'seconds':>8} {'Mvoxel/s':>9} {'peak MiB':>9} {'max |Δ| vs medsr':>17}")
        for engine, result in results.items():
            difference = np.abs(np.load(Path(work) / f"{engine}.npy") - medsr_output).max()
            print(f"{engine:14} {result['seconds']:8.1f} {result['voxels'] / result['seconds'] / 1e6:9.3f} "
                  f"{result['peak_bytes'] / 2 ** 20:9.0f} {difference:17.2e}")
        print(f"MedSR's estimate_memory for this run: {results['medsr']['estimate_bytes'] / 2 ** 20:.0f} MiB")


if __name__ == "__main__":
    main()
