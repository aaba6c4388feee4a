"""ArSSR inference cost beside threeplayer: CPU seconds and peak memory of ``medsr``'s Python API on a smooth random
``--size``³ volume (1 mm voxels) at ArSSR ×2 and ×3.3 (isotropic) and threeplayer ×2, each with its model's own tiling
window. Peak memory is the resident set size the call added (Linux VmHWM, reset just before it). Run from the
repository root:

    python Testing/Benchmarks/bench_arssr.py [--size 128] [--threads N] [--arssr MODEL] [--threeplayer MODEL]

MODEL is a checkpoint file or catalog name (default: the shipped ``arssr-cpu`` and ``threeplayer-x2``).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tiling import peak_rss_bytes, smooth_random_volume, start_peak_measurement  # noqa: E402
from MedSRLib.api import super_resolve  # noqa: E402
from MedSRLib.io.volume import Volume  # noqa: E402


def measure(volume: Volume, method: str, scale: float, checkpoint: str) -> dict:
    before = start_peak_measurement()
    started = time.perf_counter()
    result = super_resolve(volume, method, scale, checkpoint=checkpoint, device="cpu")
    seconds = time.perf_counter() - started
    return {"method": method, "scale": scale, "checkpoint": checkpoint, "output_shape": list(result.array.shape),
            "seconds": round(seconds, 1), "peak_added_mib": round((peak_rss_bytes() - before) / 2 ** 20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="input volume size (cube)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--arssr", default="arssr-cpu", help="ArSSR checkpoint file or catalog name")
    parser.add_argument("--threeplayer", default="threeplayer-x2", help="threeplayer checkpoint file or catalog name")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    volume = Volume(smooth_random_volume(arguments.size), spacing=(1.0, 1.0, 1.0))
    rows = [measure(volume, "arssr", 2.0, arguments.arssr), measure(volume, "arssr", 3.3, arguments.arssr),
            measure(volume, "threeplayer", 2.0, arguments.threeplayer)]
    print(json.dumps({"size": arguments.size, "threads": torch.get_num_threads(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
