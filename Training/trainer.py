"""The training loop shared by every recipe: batches, updates, logging, validation, resumable state, export.

``train(config)`` continues from ``<output>/training_state.safetensors`` when it exists (same step, same optimiser
state, same upcoming batches) and ends by writing ``<output>/model.safetensors``, a MedSRLib checkpoint that
``medsr super-resolve --method <method> --checkpoint <output>/model.safetensors`` loads.
"""
import logging
import platform
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from MedSRLib.models.checkpoints import save_checkpoint
from MedSRLib.evaluation.datasets import get_dataset

from .board import RunLog
from .distributed import Distributed
from .patches import PatchSampler
from .recipe import GanRecipe
from .state import load_state, save_state
from .validation import Validator

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.safetensors"
MODEL_FILE = "model.safetensors"


def hardware_description(dist: Distributed) -> str:
    if dist.device.type == "cuda":
        device = torch.cuda.get_device_name(dist.device)
    else:
        device = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return f"{dist.world_size} × {device}"


def data_provenance(names) -> list:
    """Dataset names with their registry source; plain volume files by file name."""
    return [{"name": Path(name).name, "source": "file"} if Path(name).exists()
            else {"name": name, "source": get_dataset(name).source} for name in names]


class Trainer:
    def __init__(self, config: dict, dist: Optional[Distributed] = None):
        self.config = config
        if config["training"]["cpu_threads"]:
            torch.set_num_threads(config["training"]["cpu_threads"])
        self.dist = dist or Distributed.start(config["training"]["device"])
        torch.manual_seed(config["seed"])  # identical initial weights on every rank (DDP broadcasts them anyway)
        self.output = Path(config["output"])
        self.sampler = PatchSampler.from_config(config)
        self.recipe = GanRecipe(config, self.dist)
        self.step, self.seconds, self.history = 0, 0.0, []
        self.validator = None
        if self.dist.is_main:
            settings = config["validation"]
            self.validator = Validator(settings["volume"], int(config["scale"]), settings["crop"], settings["margin"])
        self.log = RunLog(self.output, enabled=self.dist.is_main)

    @property
    def state_path(self) -> Path:
        return self.output / STATE_FILE

    def resume(self) -> bool:
        """Load the saved state when there is one; True if the run continues from it."""
        if not self.state_path.is_file():
            return False
        tensors, document = load_state(self.state_path)
        self.recipe.load_state(tensors, document)
        self.step, self.seconds, self.history = document["step"], document["seconds"], document["history"]
        return True

    def save(self) -> None:
        tensors, document = self.recipe.state()
        document.update(step=self.step, seconds=self.seconds, history=self.history, config=self.config)
        save_state(self.state_path, tensors, document)

    def validate(self) -> dict:
        patch = self.config["validation"]["patch"]
        scores = self.validator.score(lambda lr: self.recipe.predict(lr, patch))
        self.history.append({"step": self.step, **scores})
        self.log.scalars(self.step, {f"validation/{key}": value for key, value in scores.items()})
        self.log.images(self.step, self.validator.sample_slices(lambda lr: self.recipe.predict(lr, patch)))
        return scores

    def export(self) -> Path:
        config, training = self.config, self.config["training"]
        scale = float(config["scale"])
        generator = config["networks"]["generator"]
        method_patch = config["validation"]["patch"]
        latest = self.history[-1] if self.history else {}
        metadata = {
            "method": config["method"], "scales": [[scale] * 3], "axes": "3d", "patch": [method_patch] * 3,
            "architecture": {"name": generator["name"], "params": generator["params"]},
            "normalisation": {"mode": "percentile", "percentiles": [0.5, 99.5]},
            "training": {"data": data_provenance(config["data"]["train"]), "config": config,
                         "budget": {"steps": self.step, "patches": self.step * config["data"]["batch"]
                                    * self.dist.world_size, "seconds": round(self.seconds, 1)},
                         "hardware": hardware_description(self.dist)},
            "metrics": {"validation": {"volume": config["validation"]["volume"], "crop": config["validation"]["crop"],
                                       **latest}} if latest else {},
        }
        path = self.output / MODEL_FILE
        save_checkpoint(path, self.recipe.generator, metadata, half=training["half_weights"])
        return path

    def run(self) -> Path:
        """Train to ``training.steps`` (continuing a saved run) and return the exported checkpoint's path."""
        training, validation = self.config["training"], self.config["validation"]
        total = training["steps"]
        if self.resume() and self.dist.is_main:
            logger.info("Resuming %s at step %d.", self.output, self.step)
        if self.step == 0 and self.validator is not None:
            baseline = self.validator.bspline_baseline()
            self.log.scalars(0, {f"validation_bspline/{key}": value for key, value in baseline.items()})
            self.validate()  # the untrained network: the start of the validation curve
        device = self.dist.device
        progress = tqdm(total=total, initial=self.step, disable=not self.dist.is_main, unit="step",
                        desc=self.config["method"], dynamic_ncols=True)
        try:
            while self.step < total:
                started = time.perf_counter()
                inputs, targets = self.sampler.batch(self.step, self.dist.rank)
                losses = self.recipe.train_step(inputs.to(device), targets.to(device), self.step)
                self.step += 1
                self.seconds += time.perf_counter() - started
                progress.update(1)
                progress.set_postfix(pixel=f"{losses['loss/pixel']:.4f}")
                if self.step % training["log_every"] == 0:
                    self.log.scalars(self.step, losses)
                if self.dist.is_main and (self.step % validation["every"] == 0 or self.step == total):
                    scores = self.validate()
                    progress.write(f"step {self.step}: validation PSNR {scores['psnr']:.2f} dB, "
                                   f"L1 {scores['l1']:.5f}")
                if self.dist.is_main and (self.step % training["checkpoint_every"] == 0 or self.step == total):
                    self.save()
                    self.export()
        finally:
            progress.close()
            self.log.close()
        return self.output / MODEL_FILE


def train(config: dict, dist: Optional[Distributed] = None) -> Trainer:
    """Run (or continue) a training run; returns the trainer, whose ``recipe`` holds the trained networks."""
    trainer = Trainer(config, dist)
    trainer.run()
    return trainer
