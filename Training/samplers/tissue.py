"""The tissue-slice sampler of the segmentation recipe: augmented 2D slice patches of labelled training volumes, from
every plane in ``data.planes``, with the tissue label of every pixel.

Labels come from a dataset's grey- and white-matter probability maps (the ``gm`` and ``wm`` extras; DATA.md: the
ICBM 2009a T1 of nilearn, which ships no CSF map): each voxel takes the most probable of background (1 − GM − WM,
so CSF counts as background), grey matter and white matter. The image gets ``data.augment`` (flips shared with the
labels; bias field, gamma, intensity scale and noise on the image alone). When ``validation.volume`` is a training
volume, its slab ``validation.slab`` and ``validation.margin`` slices either side are cut out of it, so no window of any
plane reaches the slices the validator scores.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from MedSRLib.errors import InputError
from MedSRLib.evaluation.datasets import dataset_extra_path
from MedSRLib.io.volume_files import read_volume

from ..registry import SAMPLERS
from .augmentation import augment, random_flips
from .degradation import add_input_noise
from .windows import WindowSampler, item_rng, load_normalised

TISSUES = ("background", "grey matter", "white matter")
PROBABILITY_MAPS = ("gm", "wm")


def as_probability(array: np.ndarray) -> np.ndarray:
    """A probability map as float32 in [0, 1]; integer maps (nilearn's are uint8) span their type's range."""
    scale = np.iinfo(array.dtype).max if np.issubdtype(array.dtype, np.integer) else 1.0
    return array.astype(np.float32) / np.float32(scale)


def tissue_volume(name: str) -> Tuple[np.ndarray, np.ndarray]:
    """(the normalised volume, its uint8 labels: indices into :data:`TISSUES`) of a dataset with GM and WM maps."""
    maps = np.stack([as_probability(read_volume(dataset_extra_path(name, key)).array) for key in PROBABILITY_MAPS])
    background = np.clip(1 - maps.sum(axis=0, keepdims=True), 0, None)
    return load_normalised(name), np.argmax(np.concatenate([background, maps]), axis=0).astype(np.uint8)


def checked_slab(config: dict, length: int) -> Tuple[int, int]:
    """``validation.slab`` as (start, stop) within a volume of ``length`` axial slices."""
    slab = config["validation"]["slab"]
    if not (isinstance(slab, (list, tuple)) and len(slab) == 2 and all(isinstance(v, int) for v in slab)
            and 0 <= slab[0] < slab[1] <= length):
        raise InputError(f"validation.slab must be [start, stop) axial slices of '{config['validation']['volume']}' "
                         f"(0 ≤ start < stop ≤ {length}), not {slab!r}.")
    return slab[0], slab[1]


def outside_slab(length: int, slab: Sequence[int], margin: int) -> List[slice]:
    """The non-empty runs of [0, length) outside [slab start − margin, slab stop + margin)."""
    runs = [slice(0, max(slab[0] - margin, 0)), slice(min(slab[1] + margin, length), length)]
    return [run for run in runs if run.stop > run.start]


@SAMPLERS.register("tissue-slices")
class TissueSliceSampler:
    def __init__(self, windows: WindowSampler, labels: List[np.ndarray], batch: int, seed: int):
        self.windows, self.labels, self.batch_size, self.seed = windows, labels, batch, seed

    @classmethod
    def from_config(cls, config: dict) -> "TissueSliceSampler":
        images, labels = [], []
        validation = config["validation"]
        for name in config["data"]["train"]:
            image, label = tissue_volume(name)
            runs = [slice(None)]
            if name == validation["volume"]:
                runs = outside_slab(len(image), checked_slab(config, len(image)), validation["margin"])
            images += [image[run] for run in runs]
            labels += [label[run] for run in runs]
        windows = WindowSampler.from_config(config, config["data"]["planes"], volumes=images)
        return cls(windows, labels, config["data"]["batch"], config["seed"])

    @property
    def input_patch(self) -> Tuple[int, int]:
        return (self.windows.size,) * 2

    def example(self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """(an augmented float32 slice patch, its labels)."""
        index, window = self.windows.locate(rng)
        settings = self.windows.augment_settings
        flips = random_flips(2, rng) if settings.get("flip") else ()
        image = augment(self.windows.volumes[index][window][flips], {**settings, "flip": False}, rng)
        return add_input_noise(image, settings.get("noise", 0.0), rng), self.labels[index][window][flips]

    def batch(self, step: int, rank: int = 0) -> Dict[str, torch.Tensor]:
        """{"image": (B, 1, p, p) float32, "labels": (B, p, p) int64}, the same for the same (seed, step, rank)."""
        images, labels = zip(*(self.example(item_rng(self.seed, step, rank, item)) for item in range(self.batch_size)))
        return {"image": torch.from_numpy(np.stack(images)[:, None]),
                "labels": torch.from_numpy(np.stack(labels).astype(np.int64))}
