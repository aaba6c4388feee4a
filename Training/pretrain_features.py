"""Pre-train the frozen 3D feature network of ESRGAN-3D's perceptual loss on the training split.

No pretrained 3D VGG can be downloaded here, so the substitute is a ``resnet10_3d`` trained on a self-supervised pretext
task that needs exactly the sensitivity a perceptual loss should have: given an HR training patch, tell which of
:data:`CORRUPTIONS` was applied to it (none, two Gaussian blurs, the block-mean ×2 degradation interpolated back,
k-space truncation ×2 with its ringing, Gaussian noise). Global average pooling and one linear layer form the
classification head, which is dropped on export: the checkpoint holds the ResNet10 alone, ready for
``networks.feature_extractor.checkpoint`` of ``Training/configs/esrgan3d-x2.yaml``. Accuracy is measured on patches of
a training-split volume that is not trained on (never a held-out one).

    python -m Training.pretrain_features --output runs/features/resnet10-features.safetensors [--steps 3000]
        [--widths 16 32 64 64] [--patch 32] [--batch 8] [--learning-rate 3e-4] [--threads 1]
"""
import argparse
import sys
import time
from datetime import datetime, timezone
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch
from scipy import ndimage

from MedSRLib.models.checkpoints import CHECKPOINT_SUFFIX, save_checkpoint
from MedSRLib.grid.degradation import block_mean, kspace_truncate
from MedSRLib.errors import InputError, MedSRError
from MedSRLib.grid.spline import corner_aligned_resample
from MedSRLib.nn.registry import build_network

from .config import DEFAULTS
from .distributed import Distributed
from .patches import PatchSampler, load_normalised
from .trainer import data_provenance, hardware_description


def _block_mean_interpolated(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return corner_aligned_resample(block_mean(patch, (2, 2, 2)), (2, 2, 2), order=1)


CORRUPTIONS: Dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "none": lambda patch, rng: patch,
    "gaussian-blur-0.7": lambda patch, rng: ndimage.gaussian_filter(patch, 0.7, mode="mirror"),
    "gaussian-blur-1.5": lambda patch, rng: ndimage.gaussian_filter(patch, 1.5, mode="mirror"),
    "block-mean-x2-linear": _block_mean_interpolated,
    "kspace-x2": lambda patch, rng: kspace_truncate(patch, (2, 2, 2)),
    "gaussian-noise": lambda patch, rng: patch + rng.normal(0, rng.uniform(0.02, 0.06), patch.shape),
}


class CorruptionClassifier(torch.nn.Module):
    def __init__(self, features: torch.nn.Module, channels: int, classes: int):
        super().__init__()
        self.features = features
        self.head = torch.nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3, 4)))


def corrupted_batch(sampler: PatchSampler, step: int, rank: int = 0):
    """HR patches of the sampler's batch for this step, each corrupted by a class drawn from the same seed."""
    _, patches = sampler.batch(step, rank)
    rng = np.random.default_rng([sampler.seed, step, rank, 1])
    labels = rng.integers(len(CORRUPTIONS), size=len(patches))
    corruptions = list(CORRUPTIONS.values())
    images = [corruptions[label](patch[0].numpy(), rng).astype(np.float32) for patch, label in zip(patches, labels)]
    return torch.from_numpy(np.stack(images)[:, None]), torch.from_numpy(labels)


def hr_patch_sampler(volumes: Sequence[str], patch: int, batch: int, seed: int) -> PatchSampler:
    data = DEFAULTS["data"]
    return PatchSampler([load_normalised(name) for name in volumes], 2, patch, batch, "block-mean",
                        data["foreground_threshold"], data["foreground_fraction"], data["augment"], seed)


def accuracy(model: torch.nn.Module, sampler: PatchSampler, batches: int) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for step in range(batches):
            images, labels = corrupted_batch(sampler, step)
            correct += int((model(images).argmax(dim=1) == labels).sum())
            total += len(labels)
    model.train()
    return correct / total


def pretrain(output: str, train_volumes: Sequence[str], validation_volume: str, widths: Sequence[int], patch: int,
             batch: int, steps: int, learning_rate: float = 3e-4, seed: int = 0,
             log: Optional[Callable[[str], None]] = print) -> dict:
    # Checked before training, so a bad argument does not cost the run.
    if not str(output).endswith(CHECKPOINT_SUFFIX):
        raise InputError(f"The output '{output}' must end in {CHECKPOINT_SUFFIX}.")
    if steps < 1 or batch < 1:
        raise InputError(f"Steps and batch must be positive, not {steps} and {batch}.")
    torch.manual_seed(seed)
    params = {"widths": list(widths)}
    model = CorruptionClassifier(build_network("resnet10_3d", params), widths[-1], len(CORRUPTIONS))
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    training = hr_patch_sampler(train_volumes, patch, batch, seed)
    validation = hr_patch_sampler([validation_volume], patch, batch, seed + 1)
    validation_batches = 32
    started = time.perf_counter()
    history = [{"step": 0, "validation_accuracy": accuracy(model, validation, validation_batches)}]
    for step in range(steps):
        images, labels = corrupted_batch(training, step)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            history.append({"step": step + 1, "loss": loss.item(),
                            "validation_accuracy": accuracy(model, validation, validation_batches)})
            if log:
                log(f"step {step + 1}: loss {loss.item():.3f}, validation accuracy "
                    f"{history[-1]['validation_accuracy']:.3f}")
    seconds = time.perf_counter() - started
    metadata = {
        "method": "feature-network", "scales": [[1.0, 1.0, 1.0]], "axes": "3d", "patch": [patch] * 3,
        "architecture": {"name": "resnet10_3d", "params": params},
        "normalisation": {"mode": "percentile", "percentiles": [0.5, 99.5]},
        "training": {"data": data_provenance(train_volumes),
                     "config": {"task": "corruption classification", "classes": list(CORRUPTIONS), "patch": patch,
                                "batch": batch, "optimiser": f"Adam {learning_rate:g}", "seed": seed,
                                "validation_volume": validation_volume},
                     "budget": {"steps": steps, "patches": steps * batch, "seconds": round(seconds, 1)},
                     "hardware": hardware_description(Distributed(device=torch.device("cpu")))},
        "metrics": {"validation_accuracy": history[-1]["validation_accuracy"], "chance": 1 / len(CORRUPTIONS),
                    "history": history, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }
    save_checkpoint(output, model.features, metadata)
    return metadata


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m Training.pretrain_features", description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="checkpoint file to write (.safetensors)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--widths", type=int, nargs=4, default=[16, 32, 64, 64],
                        help="ResNet10 stage widths; must match the ESRGAN-3D config's feature_extractor params")
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--train", nargs="+", default=DEFAULTS["data"]["train"], help="training-split datasets")
    parser.add_argument("--validation-volume", default=DEFAULTS["validation"]["volume"])
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    arguments = parser.parse_args(argv)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    try:
        metadata = pretrain(arguments.output, arguments.train, arguments.validation_volume, arguments.widths,
                            arguments.patch, arguments.batch, arguments.steps, arguments.learning_rate)
    except MedSRError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"{arguments.output}: validation accuracy {metadata['metrics']['validation_accuracy']:.3f} "
          f"(chance {metadata['metrics']['chance']:.3f})")


if __name__ == "__main__":
    main()
