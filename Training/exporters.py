"""Exporters: the MedSRLib checkpoint a run writes (``<output>/model.safetensors``), with the model's inference
settings (``MedSRLib.models.inference_settings``) beside its architecture, training provenance and validation scores.

The checkpoint is the single source of how the model runs: ``scales`` (the config's scale) or ``scale_range``
(arbitrary-scale models), ``axes``, ``slice_axis`` (2D in-plane models), ``conditioning``, ``patch`` (the network's
training input window), ``inference_patch`` (the tiling window the protocol-3d validator ran it with) and
``normalisation``.
"""
import platform
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from MedSRLib.evaluation.datasets import get_dataset
from MedSRLib.models.checkpoints import save_checkpoint

from .registry import EXPORTERS
from .scaling import ScaleRange, window_axes, xyz_triple

if TYPE_CHECKING:  # the trainer hands itself over; imported for the annotation only
    from .trainer import Trainer

NORMALISATION = {"mode": "percentile", "percentiles": [0.5, 99.5]}
FEATURE_NETWORK_METHOD = "feature-network"
# The generative-prior exporter's second file, beside the model, and the architecture it holds.
CRITIC_FEATURES_FILE = "critic-features.safetensors"
CRITIC_FEATURES_ARCHITECTURE = "transmrsr_critic_features"


def data_provenance(names) -> list:
    """Dataset names with their registry source; plain volume files by file name."""
    return [{"name": Path(name).name, "source": "file"} if Path(name).exists()
            else {"name": name, "source": get_dataset(name).source} for name in names]


def hardware_description(world_size: int, device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return f"{world_size} × {name}"


@EXPORTERS.register("checkpoint")
class CheckpointExporter:
    def __init__(self, config: dict):
        self.config = config

    def inference_settings(self, trainer: "Trainer") -> dict:
        config = self.config
        settings = {"method": config["method"], "axes": config["axes"], "conditioning": trainer.recipe.conditioning,
                    "patch": list(trainer.sampler.input_patch), "normalisation": NORMALISATION}
        if config["scale_range"] is not None:
            settings["scale_range"] = ScaleRange.from_config(config["scale_range"]).to_document()
        else:
            settings["scales"] = [list(xyz_triple(config["scale"], "The scale"))]
        if config["axes"] == "2d-in-plane":
            settings["slice_axis"] = config["slice_axis"]
        if config["validator"] == "protocol-3d":
            axes = window_axes(config["axes"], config["slice_axis"])
            settings["inference_patch"] = [config["validation"]["patch"]] * len(axes)
        return settings

    def export(self, trainer: "Trainer", path: Path) -> Path:
        config = self.config
        network, architecture = trainer.recipe.exported
        latest = trainer.history[-1] if trainer.history else {}
        metadata = {
            **self.inference_settings(trainer), "architecture": architecture,
            "training": {"data": data_provenance(config["data"]["train"]), "config": config,
                         "budget": {"steps": trainer.step, "patches": trainer.step * config["data"]["batch"]
                                    * trainer.dist.world_size, "seconds": round(trainer.seconds, 1)},
                         "hardware": hardware_description(trainer.dist.world_size, trainer.dist.device)},
            "metrics": {"validation": {**trainer.validator.describe(), **latest}} if latest else {},
        }
        save_checkpoint(path, network, metadata, half=config["training"]["half_weights"])
        return path


@EXPORTERS.register("feature-network")
class FeatureNetworkExporter(CheckpointExporter):
    """A feature network for ``networks.feature_extractor.checkpoint``: no super-resolution method or scale of its
    own (method ``feature-network``, scale 1), on the config's layout (``3d``, or ``2d-in-plane`` for a 2D one)."""

    def inference_settings(self, trainer: "Trainer") -> dict:
        return {"method": FEATURE_NETWORK_METHOD, "scales": [[1.0, 1.0, 1.0]], "axes": self.config["axes"],
                "patch": list(trainer.sampler.input_patch), "normalisation": NORMALISATION}


@EXPORTERS.register("generative-prior")
class GenerativePriorExporter(CheckpointExporter):
    """TransMRSR's stage 1 (the ``generative-prior`` recipe): the network, with the self-distilled truncation's
    centres (K-means of latents its own mapping network samples, seeded by the config's seed), which stage 2 starts
    from; and beside it :data:`CRITIC_FEATURES_FILE`, the stage-1 critic's trunk as a 2D feature network (method
    ``feature-network``) for stage 2's content and style losses."""

    def export(self, trainer: "Trainer", path: Path) -> Path:
        network, _ = trainer.recipe.exported
        network.distil_latent_centres(generator=torch.Generator().manual_seed(self.config["seed"]))
        super().export(trainer, path)
        config = self.config
        metadata = {"method": FEATURE_NETWORK_METHOD, "scales": [[1.0, 1.0, 1.0]], "axes": "2d-in-plane",
                    "patch": [config["data"]["hr_patch"]] * 2, "normalisation": NORMALISATION,
                    "architecture": {"name": CRITIC_FEATURES_ARCHITECTURE,
                                     "params": config["networks"]["critic"]["params"]},
                    "training": {"data": data_provenance(config["data"]["train"]), "config": config,
                                 "budget": {"steps": trainer.step, "seconds": round(trainer.seconds, 1)},
                                 "hardware": hardware_description(trainer.dist.world_size, trainer.dist.device),
                                 "role": "the trunk of the stage-1 critic of TransMRSR's generative prior"},
                    "metrics": {}}
        save_checkpoint(path.parent / CRITIC_FEATURES_FILE, trainer.recipe.networks["critic"].features, metadata)
        return path
