"""Three-player GAN throughput: training patches per second and the time of a 256³ ×2 tiled inference.

Training runs the real recipe (generator, critic, feature extractor, all three updates) on real training patches for
``--steps`` timed iterations after one warm-up iteration. Inference runs the config's generator, untrained (the time
does not depend on the weights), over a smooth random ``--size``³ volume with MedSR's tiling engine; sizes below 256
also print the time scaled to 256³ by the voxel count, marked as an estimate. Run from the repository root:

    python Testing/Benchmarks/bench_threeplayer.py [--config Training/configs/threeplayer-x2.yaml] [--steps 5]
        [--size 256] [--threads N] [--device cpu|cuda]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from MedSRLib.engine.tiling import TilingOptions, run_tiled  # noqa: E402
from Training.config import load_config  # noqa: E402
from Training.distributed import Distributed  # noqa: E402
from Training.recipes.paired_3d import Paired3dRecipe  # noqa: E402
from Training.samplers.paired import PairedSampler  # noqa: E402

REFERENCE_SIZE = 256


def training_patches_per_second(config: dict, steps: int, device: torch.device) -> float:
    sampler = PairedSampler.from_config(config)
    recipe = Paired3dRecipe(config, Distributed(device=device))

    def iteration(step):
        recipe.train_step({key: value.to(device) for key, value in sampler.batch(step).items()}, step)
    iteration(0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for step in range(1, steps + 1):
        iteration(step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * config["data"]["batch"] / (time.perf_counter() - started)


def inference_seconds(config: dict, size: int, device: torch.device) -> float:
    from scipy.ndimage import gaussian_filter
    from MedSRLib.nn.registry import build_network
    generator = config["networks"]["generator"]
    network = build_network(generator["name"], generator["params"])
    volume = gaussian_filter(np.random.default_rng(0).random((size,) * 3, dtype=np.float32), sigma=3)
    scale = int(config["scale"])
    options = TilingOptions(patch=config["validation"]["patch"], batch_size=4, device=device.type)
    started = time.perf_counter()
    run_tiled(network, volume, (scale,) * 3, options)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="Training/configs/threeplayer-x2.yaml")
    parser.add_argument("--steps", type=int, default=5, help="timed training iterations")
    parser.add_argument("--size", type=int, default=REFERENCE_SIZE, help="inference volume size (cube)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    device = torch.device(arguments.device)
    config = load_config(arguments.config)
    result = {"config": arguments.config, "device": arguments.device, "threads": torch.get_num_threads(),
              "hr_patch": config["data"]["hr_patch"], "batch": config["data"]["batch"],
              "training_patches_per_s": round(training_patches_per_second(config, arguments.steps, device), 3)}
    seconds = inference_seconds(config, arguments.size, device)
    result[f"inference_{arguments.size}_x2_s"] = round(seconds, 1)
    if arguments.size != REFERENCE_SIZE:
        result[f"inference_{REFERENCE_SIZE}_x2_s_estimate"] = round(seconds * (REFERENCE_SIZE / arguments.size) ** 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
