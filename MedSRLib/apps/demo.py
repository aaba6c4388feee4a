"""``medsr demo``: the README's first command, end to end on a real scan.

Fetches Colin27 (a real T1, held out from training), makes a 2 mm version of it by block averaging, super-resolves that
back to 1 mm, and writes the low-resolution input, the result and ``comparison.png`` (low resolution / linear / method /
reference, axial and coronal, with PSNR against the reference).
"""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from MedSRLib.api import super_resolve
from MedSRLib.evaluation.datasets import dataset_path, fetch_datasets
from MedSRLib.grid.intensity import Normaliser
from MedSRLib.evaluation.metrics import psnr
from MedSRLib.evaluation.simulate import simulate_low_resolution
from MedSRLib.io.volume_files import read_volume, write_volume

# The best shipped method for isotropic x2 on held-out Colin27 (`python -m MedSRLib.evaluation --rows isotropic-2
# --methods bspline lanczos threeplayer`): the shipped threeplayer-x2 model, 35.59 dB against Lanczos-3's 33.83 dB and
# cubic B-spline's 33.54 dB.
DEMO_METHOD = "threeplayer"
SCALE = 2


def run_demo(output_dir, method: str = DEMO_METHOD, progress=None) -> Path:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    fetch_datasets(names=["colin27"])
    reference = read_volume(dataset_path("colin27"))
    low_resolution = simulate_low_resolution(reference, "block-mean", SCALE)
    write_volume(low_resolution, output_dir / "colin27_2mm.nrrd")

    result = super_resolve(low_resolution, method, SCALE, progress=progress)
    write_volume(result, output_dir / f"colin27_2mm_x2_{method}.nrrd")
    linear = super_resolve(low_resolution, "linear", SCALE)
    nearest = super_resolve(low_resolution, "nearest", SCALE)

    # The low-resolution grid dropped the odd last slice of each axis; compare on the common extent.
    shape = result.array.shape
    hr = reference.array[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    panels = [("2 mm input", nearest.array), ("linear", linear.array), (method, result.array), ("1 mm reference", hr)]
    normaliser = Normaliser.fit(hr, clip=True)
    labelled = []
    for label, array in panels:
        image = normaliser.forward(array)
        if array is not hr:
            label += f"  {psnr(image, normaliser.forward(hr)):.2f} dB"
        labelled.append((label, image))
    picture = output_dir / "comparison.png"
    save_comparison(labelled, picture)
    return picture


def save_comparison(panels, path):
    """One column per panel; the mid axial slice above the mid coronal slice; labels on top."""
    rows = []
    for view in (lambda a: a[a.shape[0] // 2], lambda a: a[:, a.shape[1] // 2]):
        rows.append(np.concatenate([np.flipud(view(image)) for _, image in panels], axis=1))
    grid = (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).astype(np.uint8)
    label_height = 18
    canvas = Image.new("L", (grid.shape[1], grid.shape[0] + label_height), 0)
    canvas.paste(Image.fromarray(grid), (0, label_height))
    draw = ImageDraw.Draw(canvas)
    panel_width = grid.shape[1] // len(panels)
    for index, (label, _) in enumerate(panels):
        draw.text((index * panel_width + 4, 3), label, fill=255)
    canvas.save(path)


