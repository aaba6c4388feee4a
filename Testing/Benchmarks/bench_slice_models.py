"""What the 2D slice networks cost (issue: the thesis's 2D methods, item 6): parameters, FLOPs per 256×256 output slice
and CPU seconds per slice, each network at the size its CPU config trains and at the thesis's size, beside cubic
B-spline on the same slice. Networks are built from their training configs' architectures (random weights: the cost
does not depend on them), so nothing needs to be trained or fetched. Run from the repository root:

    python Testing/Benchmarks/bench_slice_models.py [--threads N] [--repeats 3] [--json results.json]

Seconds are the median of ``--repeats`` forward passes over one whole slice (64×64 in, 256×256 out at ×4; MIASSR at
×4 too), after one warm-up pass; B-spline is MedSR's ``bspline`` method on a stack of 8 such slices, per slice.
FLOPs count convolutions, matrix products and attention (a multiply-add is 2), as the checkpoints' ``cost`` field.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from MedSRLib.api import super_resolve  # noqa: E402
from MedSRLib.engine.cost import example_inputs, flops_per_output_voxel  # noqa: E402
from MedSRLib.io.volume import Volume  # noqa: E402
from MedSRLib.nn.registry import build_network  # noqa: E402
from Training.config import load_config  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "Training" / "configs"
OUTPUT_SIDE = 256
FACTOR = 4
# (label, config whose generator is measured, params replacing the config's for the thesis's size, conditioning)
MODELS = [
    ("msgan (CPU config)", "msgan-x4-cpu.yaml", None, "none"),
    ("msgan (thesis: 16 blocks × 64)", "msgan-x4-cpu.yaml", {"features": 64, "blocks": 16}, "none"),
    ("miassr (CPU config)", "miassr-cpu.yaml", None, "coordinates"),
    ("miassr (thesis: 16 blocks × 64)", "miassr-cpu.yaml", {"features": 64, "blocks": 16}, "coordinates"),
    ("rdst-e (CPU config)", "rdst-e-x4-cpu.yaml", None, "none"),
    ("rdst (CPU config)", "rdst-x4-cpu.yaml", None, "none"),
]


def generator(config_name: str, params_override) -> torch.nn.Module:
    spec = load_config(CONFIGS / config_name)["networks"]["generator"]
    return build_network(spec["name"], {**spec["params"], **(params_override or {})}).eval()


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up: allocations, kernel selection
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_network(label, config_name, params_override, conditioning, repeats) -> dict:
    network = generator(config_name, params_override)
    window = (OUTPUT_SIDE // FACTOR,) * 2
    factors = (float(FACTOR),) * 2
    inputs = example_inputs(window, conditioning, factors)

    def forward():
        with torch.inference_mode():
            return network(*inputs)

    flops = flops_per_output_voxel(network, window, conditioning, factors) * OUTPUT_SIDE ** 2
    return {"model": label, "parameters": sum(p.numel() for p in network.parameters()),
            "gflops_per_slice": flops / 1e9, "seconds_per_slice": median_seconds(forward, repeats)}


def measure_bspline(repeats) -> dict:
    side, slices = OUTPUT_SIDE // FACTOR, 8  # MedSR's volumes have at least 2 voxels along every axis
    volume = Volume(np.random.default_rng(0).random((slices, side, side)).astype(np.float32), (1.0, 1.0, 1.0))
    seconds = median_seconds(lambda: super_resolve(volume, "bspline", (FACTOR, FACTOR, 1)), repeats) / slices
    return {"model": "bspline (cubic B-spline)", "parameters": 0, "gflops_per_slice": None,
            "seconds_per_slice": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure_bspline(args.repeats)]
    rows += [measure_network(*model, args.repeats) for model in MODELS]
    print(f"in-plane ×{FACTOR}, one {OUTPUT_SIDE}×{OUTPUT_SIDE} output slice, {args.threads} thread(s)")
    print(f"{'model':34} {'parameters':>11} {'GFLOP/slice':>12} {'s/slice':>9}")
    for row in rows:
        gflops = "—" if row["gflops_per_slice"] is None else f"{row['gflops_per_slice']:.2f}"
        print(f"{row['model']:34} {row['parameters']:>11,} {gflops:>12} {row['seconds_per_slice']:>9.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
