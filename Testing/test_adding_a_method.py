"""docs/adding-a-method.md is true: its three files, written into a copy of the library exactly as the guide prints
them, register a method, train for a few steps and run through ``medsr super-resolve``."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

import MedSRLib

REPOSITORY = Path(__file__).resolve().parents[1]
GUIDE = REPOSITORY / "docs" / "adding-a-method.md"
GUIDE_FILES = ["MedSRLib/methods/tiny_sr.py", "MedSRLib/nn/nets/tiny_arbitrary_2d.py", "Training/configs/tiny-sr.yaml"]


def guide_files() -> dict:
    """{path: text} of the guide's code blocks that name a file (```python file=PATH)."""
    return dict(re.findall(r"```(?:python|yaml) file=(\S+)\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S))


def smooth_volume(path: Path, seed: int, shape=(32, 40, 36), spacing=(1.0, 1.0, 1.0)) -> None:
    array = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 2).astype(np.float32) * 1000
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def run(arguments, root: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, *arguments], cwd=root, env=environment, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_the_guide_adds_one_method_file_one_network_file_and_one_config():
    assert sorted(guide_files()) == GUIDE_FILES
    assert not any((REPOSITORY / path).exists() for path in GUIDE_FILES), "the example is not part of the product"
    assert "tiny-sr" not in [method["name"] for method in MedSRLib.list_methods()]


def test_a_method_added_as_the_guide_says_trains_and_runs_through_medsr(tmp_path):
    root = tmp_path / "repository"
    for package in ("MedSRLib", "Training"):
        shutil.copytree(REPOSITORY / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    for path, text in guide_files().items():
        (root / path).write_text(text, encoding="utf-8")

    listing = json.loads(run(["-m", "MedSRLib.apps.cli", "methods", "--json"], root).stdout)
    assert "tiny-sr" in [method["name"] for method in listing["methods"]]

    volumes = [tmp_path / f"train{seed}.nii.gz" for seed in (1, 2)]
    for seed, path in enumerate(volumes, start=1):
        smooth_volume(path, seed)
    smooth_volume(tmp_path / "validation.nii.gz", 3, shape=(8, 48, 48))
    run_folder = tmp_path / "run"
    run(["-m", "Training.train", "--config", "Training/configs/tiny-sr.yaml",
         "--set", f"output={run_folder}", "--set", f"data.train={json.dumps([str(path) for path in volumes])}",
         "--set", f"validation.volume={tmp_path / 'validation.nii.gz'}", "--set", "validation.crop=24",
         "--set", "validation.margin=2", "--set", "validation.slices=2", "--set", "validation.every=3",
         "--set", "training.steps=3", "--set", "data.batch=2", "--set", "data.hr_patch=24"], root)
    checkpoint = run_folder / "model.safetensors"
    assert checkpoint.is_file()

    smooth_volume(tmp_path / "scan.nii.gz", 4, shape=(6, 20, 18), spacing=(1.5, 1.2, 3.0))
    run(["-m", "MedSRLib.apps.cli", "super-resolve", str(tmp_path / "scan.nii.gz"), str(tmp_path / "sr.nii.gz"),
         "--method", "tiny-sr", "--scale", "2.5,2,1", "--checkpoint", str(checkpoint), "--device", "cpu"], root)
    result = sitk.ReadImage(str(tmp_path / "sr.nii.gz"))
    assert result.GetSize() == (45, 40, 6)
    np.testing.assert_allclose(result.GetSpacing(), (0.6, 0.6, 3.0))
