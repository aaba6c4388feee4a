"""ESRGAN-3D's frozen feature network (Training/configs/features-resnet10.yaml, the feature-pretraining recipe) on real
training patches: the pretext corruptions, the exported checkpoint, its use as a frozen player."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TRAIN_VOLUME, VALIDATION_VOLUME
from MedSRLib.models.checkpoints import load_model
from Training.config import load_config
from Training.distributed import Distributed
from Training.recipes.paired_3d import Paired3dRecipe
from Training.samplers.corruptions import CORRUPTIONS, CorruptionSampler
from Training.train import main
from Training.trainer import train

CONFIGS = Path(__file__).resolve().parents[1] / "Training/configs"

pytestmark = pytest.mark.usefixtures("training_volumes")


def tiny_features(output, **extra) -> list:
    settings = {"output": str(output), "data.train": [TRAIN_VOLUME], "validation.volume": VALIDATION_VOLUME,
                "networks.feature_extractor.params": {"widths": [4, 4, 8, 8]}, "data.hr_patch": 16, "data.batch": 4,
                "validation.batches": 4, "training.steps": 3, **extra}
    return [f"{key}={json.dumps(value)}" for key, value in settings.items()]


def test_every_corruption_but_none_changes_a_patch_and_batches_repeat_per_step():
    rng = np.random.default_rng(0)
    patch = np.zeros((16, 16, 16), dtype=np.float32)
    patch[:, :, 8:] = 1.0
    for name, corrupt in CORRUPTIONS.items():
        changed = not np.allclose(corrupt(patch, rng), patch, atol=1e-4)
        assert changed == (name != "none"), name
    sampler = CorruptionSampler.from_config(load_config(CONFIGS / "features-resnet10.yaml",
                                                       tiny_features("unused", **{"data.batch": 6})))
    first, again = sampler.batch(5), sampler.batch(5)
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["label"], again["label"])
    assert first["image"].shape == (6, 1, 16, 16, 16) and first["label"].max() < len(CORRUPTIONS)


def test_pretrained_network_exports_alone_and_serves_esrgan3d_as_a_frozen_player(tmp_path):
    train(load_config(CONFIGS / "features-resnet10.yaml", tiny_features(tmp_path / "features")))
    checkpoint = tmp_path / "features" / "model.safetensors"
    features, loaded = load_model(checkpoint)
    assert loaded["method"] == "feature-network" and loaded["training"]["budget"]["steps"] == 3
    assert loaded["architecture"] == {"name": "resnet10_3d", "params": {"widths": [4, 4, 8, 8]}}
    assert 0.0 <= loaded["metrics"]["validation"]["accuracy"] <= 1.0
    assert features(torch.rand(1, 1, 16, 16, 16)).shape == (1, 8, 2, 2, 2)

    settings = {"networks.feature_extractor.checkpoint": str(checkpoint),
                "networks.feature_extractor.params": {"widths": [4, 4, 8, 8]},
                "networks.generator.params": {"features": 8, "growth": 4, "blocks": 1, "scale": 2},
                "networks.critic.params": {"filters": [8, 16]}, "training.steps": 2}
    config = load_config(CONFIGS / "esrgan3d-x2.yaml", [f"{k}={json.dumps(v)}" for k, v in settings.items()])
    recipe = Paired3dRecipe(config, Distributed(device=torch.device("cpu")))
    before = {name: value.clone() for name, value in recipe.frozen_features.state_dict().items()}
    generator_before = [p.clone() for p in recipe.generator.parameters()]
    recipe.train_step({"input": torch.rand(2, 1, 8, 8, 8), "target": torch.rand(2, 1, 16, 16, 16)}, 0)
    assert all(torch.equal(value, before[name]) for name, value in recipe.frozen_features.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(generator_before, recipe.generator.parameters()))


def test_bad_settings_are_refused_before_training(tmp_path, capsys):
    config = str(CONFIGS / "features-resnet10.yaml")
    for settings, message in (({"training.steps": 0}, "must be a positive whole number"),
                              ({"data.train": ["colin27"]}, "held out")):
        with pytest.raises(SystemExit) as stop:
            main(["--config", config, *sum((["--set", o] for o in tiny_features(tmp_path / "run", **settings)), [])])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
