"""ESRGAN-3D's frozen feature network: the pretext corruptions, the exported checkpoint, its use as a frozen player."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TRAIN_VOLUME, VALIDATION_VOLUME
from MedSRLib.models.checkpoints import load_model
from Training.config import load_config
from Training.distributed import Distributed
from Training.pretrain_features import CORRUPTIONS, corrupted_batch, hr_patch_sampler, pretrain
from Training.recipe import GanRecipe

pytestmark = pytest.mark.usefixtures("training_volumes")


def test_every_corruption_but_none_changes_a_patch_and_batches_repeat_per_step():
    rng = np.random.default_rng(0)
    patch = np.zeros((16, 16, 16), dtype=np.float32)
    patch[:, :, 8:] = 1.0
    for name, corrupt in CORRUPTIONS.items():
        changed = not np.allclose(corrupt(patch, rng), patch, atol=1e-4)
        assert changed == (name != "none"), name
    sampler = hr_patch_sampler([TRAIN_VOLUME], patch=16, batch=6, seed=1)
    first, again = corrupted_batch(sampler, 5), corrupted_batch(sampler, 5)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert first[0].shape == (6, 1, 16, 16, 16) and first[1].max() < len(CORRUPTIONS)


def test_pretrained_network_exports_alone_and_serves_esrgan3d_as_a_frozen_player(tmp_path):
    checkpoint = tmp_path / "features.safetensors"
    metadata = pretrain(str(checkpoint), [TRAIN_VOLUME], VALIDATION_VOLUME, widths=[4, 4, 8, 8], patch=16, batch=4,
                        steps=3, log=None)
    assert metadata["training"]["budget"]["steps"] == 3
    assert 0.0 <= metadata["metrics"]["validation_accuracy"] <= 1.0
    features, loaded = load_model(checkpoint)
    assert loaded["architecture"] == {"name": "resnet10_3d", "params": {"widths": [4, 4, 8, 8]}}
    assert features(torch.rand(1, 1, 16, 16, 16)).shape == (1, 8, 2, 2, 2)

    settings = {"losses.preset": "esrgan3d", "networks.feature_extractor.checkpoint": str(checkpoint),
                "networks.generator.params": {"features": 8, "growth": 4, "blocks": 1, "scale": 2},
                "networks.critic.params": {"filters": [8, 16]}, "training.steps": 2}
    config = load_config(Path(__file__).resolve().parents[1] / "Training/configs/esrgan3d-x2.yaml",
                         [f"{k}={json.dumps(v)}" for k, v in settings.items()])
    recipe = GanRecipe(config, Distributed(device=torch.device("cpu")))
    before = {name: value.clone() for name, value in recipe.frozen_features.state_dict().items()}
    generator_before = [p.clone() for p in recipe.generator.parameters()]
    recipe.train_step(torch.rand(2, 1, 8, 8, 8), torch.rand(2, 1, 16, 16, 16), 0)
    assert all(torch.equal(value, before[name]) for name, value in recipe.frozen_features.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(generator_before, recipe.generator.parameters()))


def test_bad_arguments_are_refused_before_training(tmp_path, capsys):
    from Training.pretrain_features import main
    for arguments, message in ((["--output", str(tmp_path / "features.pt")], "must end in .safetensors"),
                               (["--output", str(tmp_path / "f.safetensors"), "--steps", "0"], "must be positive")):
        with pytest.raises(SystemExit) as stop:
            main(arguments + ["--train", TRAIN_VOLUME])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["--output", str(tmp_path / "f.safetensors"), "--train", "colin27", "--steps", "1"])
    assert stop.value.code == 2 and "held out" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
