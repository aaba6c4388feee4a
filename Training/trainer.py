"""The one training loop: batches, updates, logging, validation, resumable state, export — for every recipe.

The config (from :func:`Training.config.load_config`) names a recipe, a sampler, a validator and an exporter; each is
looked up in its registry (:mod:`Training.registry`). ``train(config)`` continues from
``<output>/training_state.safetensors`` when it exists (same step, same optimiser state, same upcoming batches) and ends
by writing ``<output>/model.safetensors``, the exporter's MedSRLib checkpoint. With ``validation.select`` it also keeps
``<output>/model-best.safetensors``: the checkpoint of the validation with the best score by that metric (e.g. CLADE's
mean through-plane PIQE), among those whose PSNR stays within ``min_psnr_gain`` dB of the validator's B-spline baseline.
"""
import functools
import logging
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from MedSRLib.errors import InputError

from .board import RunLog
from .distributed import Distributed
from .registry import EXPORTERS, RECIPES, SAMPLERS, VALIDATORS
from .state import load_state, save_state

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.safetensors"
MODEL_FILE = "model.safetensors"
BEST_MODEL_FILE = "model-best.safetensors"


def selection_rank(select: dict, scores: dict, floor: float) -> Optional[float]:
    """Where ``scores`` stand by ``validation.select`` (``select``), lower being better: the metric, negated when higher
    is better; None when their PSNR is below ``floor`` (:meth:`Trainer.selection_floor`), which makes them ineligible."""
    if not scores["psnr"] >= floor:  # a NaN PSNR is ineligible too
        return None
    return scores[select["metric"]] if select["lower_is_better"] else -scores[select["metric"]]


class Trainer:
    def __init__(self, config: dict, dist: Optional[Distributed] = None):
        self.config = config
        if config["training"]["cpu_threads"]:
            torch.set_num_threads(config["training"]["cpu_threads"])
        self.dist = dist or Distributed.start(config["training"]["device"])
        torch.manual_seed(config["seed"])  # identical initial weights on every rank (DDP broadcasts them anyway)
        self.output = Path(config["output"])
        self.sampler = SAMPLERS.get(config["sampler"]).from_config(config)
        self.recipe = RECIPES.get(config["recipe"])(config, self.dist)
        self.validator = VALIDATORS.get(config["validator"])(config, self.dist.device) if self.dist.is_main else None
        self.exporter = EXPORTERS.get(config["exporter"])(config)
        self.step, self.seconds, self.history = 0, 0.0, []
        self.log = RunLog(self.output, enabled=self.dist.is_main)
        select = config["validation"]["select"]
        if select and self.validator is not None:
            scored = self.baseline_scores.get("bspline", {})
            if select["metric"] not in scored:
                raise InputError(f"validation.select picks by '{select['metric']}', which the "
                                 f"'{config['validator']}' validator does not score against a B-spline baseline "
                                 f"(it scores: {', '.join(scored) or 'no baseline'}).")

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
        scores, images = self.validator.evaluate(self.recipe.validation_network)
        self.history.append({"step": self.step, **scores})
        self.log.scalars(self.step, {f"validation/{key}": value for key, value in scores.items()})
        self.log.images(self.step, images)
        return scores

    def export(self) -> Path:
        return self.exporter.export(self, self.output / MODEL_FILE)

    @functools.cached_property
    def baseline_scores(self) -> dict:
        """{baseline name: scores} of the validator's baselines (interpolation), scored once per run."""
        return self.validator.baselines()

    def selection_floor(self) -> float:
        """The lowest validation PSNR ``validation.select`` accepts: the validator's B-spline PSNR plus
        ``min_psnr_gain``, or no floor when that is null."""
        gain = self.config["validation"]["select"]["min_psnr_gain"]
        return -float("inf") if gain is None else self.baseline_scores["bspline"]["psnr"] + gain

    def is_best(self, scores: dict) -> bool:
        """Whether ``scores`` (the latest validation) are the best of the run by ``validation.select``; the untrained
        network (step 0) never counts."""
        select = self.config["validation"]["select"]
        if not select:
            return False
        floor = self.selection_floor()
        eligible = [selection_rank(select, entry, floor) for entry in self.history if entry["step"] > 0]
        rank = selection_rank(select, scores, floor)
        return rank is not None and self.step > 0 and rank <= min(other for other in eligible if other is not None)

    def run(self) -> Path:
        """Train to ``training.steps`` (continuing a saved run) and return the exported checkpoint's path."""
        training, validation = self.config["training"], self.config["validation"]
        total = training["steps"]
        if self.resume() and self.dist.is_main:
            logger.info("Resuming %s at step %d.", self.output, self.step)
        if self.step == 0 and self.validator is not None:
            for name, scores in self.baseline_scores.items():
                self.log.scalars(0, {f"validation_{name}/{key}": value for key, value in scores.items()})
            self.validate()  # the untrained network: the start of the validation curve
        device = self.dist.device
        headline = self.recipe.headline
        progress = tqdm(total=total, initial=self.step, disable=not self.dist.is_main, unit="step",
                        desc=self.config["method"], dynamic_ncols=True)
        try:
            while self.step < total:
                started = time.perf_counter()
                batch = {key: value.to(device) for key, value in self.sampler.batch(self.step, self.dist.rank).items()}
                self.recipe.set_learning_rate(self.step)
                losses = self.recipe.train_step(batch, self.step)
                self.step += 1
                self.seconds += time.perf_counter() - started
                progress.update(1)
                progress.set_postfix({headline.split("/")[-1]: f"{losses[headline]:.4f}"})
                if self.step % training["log_every"] == 0:
                    self.log.scalars(self.step, losses)
                if self.dist.is_main and (self.step % validation["every"] == 0 or self.step == total):
                    scores = self.validate()
                    progress.write(f"step {self.step}: {self.validator.summary(scores)}")
                    if self.is_best(scores):
                        self.exporter.export(self, self.output / BEST_MODEL_FILE)
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
