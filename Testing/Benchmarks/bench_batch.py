"""Throughput of ``medsr batch`` (volumes per minute): one and two local worker processes, and a Dask LocalCluster.

Each configuration super-resolves the same folder of synthetic random volumes into a fresh output folder through
``MedSRLib.apps.batch.run_batch``, so the times include starting the worker processes, as ``medsr batch`` does; the
Dask cluster is started before the clock (``--scheduler`` runs on an existing cluster). Run from the repository root:

    python Testing/Benchmarks/bench_batch.py [--volumes 8] [--size 32] [--method bspline] [--scale 2]
                                             [--dask-workers 2]
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from MedSRLib.apps.batch import run_batch  # noqa: E402


def write_volumes(folder: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for index in range(count):
        image = sitk.GetImageFromArray(rng.random((size,) * 3, dtype=np.float32))
        sitk.WriteImage(image, str(folder / f"volume-{index:03d}.nii.gz"))


def timed_run(folder: Path, output_dir: Path, args, **where) -> float:
    """Volumes per minute of one batch run; every case must succeed."""
    summary = run_batch(folder, output_dir, args.method, args.scale, **where)
    if summary.count("done") != args.volumes:
        raise SystemExit(f"{summary.count('failed')} cases failed: {summary.failed[0]['reason']}")
    return 60 * args.volumes / summary.seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=8)
    parser.add_argument("--size", type=int, default=32, help="edge of the cubic input volumes, in voxels")
    parser.add_argument("--method", default="bspline")
    parser.add_argument("--scale", default="2")
    parser.add_argument("--dask-workers", type=int, default=2, help="worker processes of the LocalCluster")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="medsr-bench-batch-") as temporary:
        folder = Path(temporary) / "in"
        folder.mkdir()
        write_volumes(folder, args.volumes, args.size)
        rows = [(f"local, {workers} worker{'s' * (workers > 1)}",
                 timed_run(folder, Path(temporary) / f"local-{workers}", args, workers=workers)) for workers in (1, 2)]
        try:
            from dask.distributed import LocalCluster
        except ImportError:
            print('Dask is not installed (pip install "medsr[batch]"): the Dask row is left out.', file=sys.stderr)
        else:
            with LocalCluster(n_workers=args.dask_workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster:
                rows.append((f"Dask LocalCluster, {args.dask_workers} workers",
                             timed_run(folder, Path(temporary) / "dask", args, scheduler=cluster.scheduler_address)))

    print(f"{args.volumes} volumes of {args.size}³, {args.method} ×{args.scale}")
    print(f"{'configuration':<32} {'volumes/min':>12}")
    for name, throughput in rows:
        print(f"{name:<32} {throughput:>12.1f}")


if __name__ == "__main__":
    main()
