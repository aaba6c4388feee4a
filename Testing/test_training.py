"""The training framework on real training patches: a short run, its checkpoint in `medsr`, kill and resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from conftest import TRAIN_VOLUME, VALIDATION_VOLUME
from MedSRLib.models.checkpoints import load_model
from MedSRLib.evaluation.datasets import get_dataset
from MedSRLib.errors import InputError
from MedSRLib.io.volume import Volume
from MedSRLib.io.volume_files import read_volume, write_volume
from Training.config import load_config
from Training.distributed import Distributed
from Training.recipes.base import Recipe
from Training.samplers.paired import PairedSampler
from Training.samplers.windows import resolve_volume_path
from Training.state import STATE_KEY, flatten_optimiser, unflatten_optimiser
from Training.trainer import STATE_FILE, Trainer, train

REPOSITORY = Path(__file__).resolve().parents[1]


def tiny_overrides(output, steps, **extra):
    """A network small enough for a few dozen CPU steps in seconds; the authors'-code loss preset."""
    settings = {
        "output": str(output), "losses.preset": "threeplayer-code", "data.train": [TRAIN_VOLUME],
        "networks.generator.params": {"features": 8, "growth": 4, "blocks": 1, "scale": 2},
        "networks.critic.params": {"filters": [8, 16]},
        "networks.feature_extractor.params": {"widths": [8, 8, 8, 8]},
        "losses.instance_noise.steps_per_epoch": 10, "optimiser.lr": 1.0e-3,
        "data.hr_patch": 16, "data.batch": 2, "validation.volume": VALIDATION_VOLUME, "validation.crop": 32,
        "validation.margin": 4, "validation.patch": 16, "validation.every": 1000,
        "training.steps": steps, "training.checkpoint_every": 1000, "training.log_every": 1,
        "training.cpu_threads": 1, "seed": 3}
    settings.update(extra)
    return [f"{key}={json.dumps(value)}" for key, value in settings.items()]


pytestmark = pytest.mark.usefixtures("training_volumes")


def test_config_refuses_unknown_keys_and_lets_explicit_keys_override_a_preset():
    with pytest.raises(InputError, match="Unknown training config key 'training.stpes'"):
        load_config(overrides=["training.stpes=3"])
    config = load_config(REPOSITORY / "Training/configs/threeplayer-x2-paper.yaml", ["losses.pixel=0.5"])
    assert config["losses"]["feature_extractor"] == "joint" and config["losses"]["perceptual"] == 1.0
    assert config["losses"]["pixel"] == 0.5 and config["networks"]["generator"]["params"]["blocks"] == 3


@pytest.mark.parametrize("config_file", sorted((REPOSITORY / "Training/configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads_and_builds_its_networks(config_file):
    from MedSRLib.methods import get_method
    from MedSRLib.nn.registry import build_network
    from Training.exporters import FEATURE_NETWORK_METHOD
    config = load_config(config_file)
    if config["exporter"] == "feature-network":
        assert config["method"] == FEATURE_NETWORK_METHOD
    else:
        assert get_method(config["method"]).name == config["method"]
    for spec in config["networks"].values():
        if spec is not None:
            assert isinstance(build_network(spec["name"], spec["params"]), torch.nn.Module)


def test_learning_rate_drops_by_the_decay_factor_at_each_decay_step_and_bad_steps_are_refused():
    config = load_config(overrides=["optimiser.lr=0.002", "optimiser.decay_at=[50, 75]", "training.steps=100"])
    recipe = Recipe(config, Distributed())
    assert [recipe.learning_rate(step) for step in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [2e-3, 2e-3, 2e-4, 2e-4, 2e-5, 2e-5])
    for bad in ("[0.5]", "[0]", '["half"]'):
        with pytest.raises(InputError, match="optimiser.decay_at must list positive whole step numbers"):
            Recipe(load_config(overrides=[f"optimiser.decay_at={bad}"]), Distributed())


def test_patch_sampler_is_reproducible_per_step_and_rank_and_refuses_held_out_volumes():
    config = load_config(overrides=tiny_overrides("unused", 1))
    sampler = PairedSampler.from_config(config)
    batch = sampler.batch(step=5, rank=1)
    inputs, targets = batch["input"], batch["target"]
    assert inputs.shape == (2, 1, 8, 8, 8) and targets.shape == (2, 1, 16, 16, 16)
    assert torch.equal(sampler.batch(5, 1)["target"], targets)
    assert not torch.equal(sampler.batch(5, 0)["target"], targets)
    assert (targets.flatten(1).amax(dim=1) > 0.1).all()  # foreground-aware: no empty background patches here
    with pytest.raises(InputError, match="held out"):
        resolve_volume_path("colin27")


def test_optimiser_state_survives_flattening_into_tensors_and_json():
    network = torch.nn.Linear(3, 2)
    optimiser = torch.optim.Adam(network.parameters(), lr=0.01)
    network(torch.ones(1, 3)).sum().backward()
    optimiser.step()
    tensors, document = flatten_optimiser("generator/optimiser", optimiser.state_dict())
    restored = unflatten_optimiser("generator/optimiser", tensors, json.loads(json.dumps(document)))
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=0.5)
    fresh.load_state_dict(restored)
    original = optimiser.state_dict()
    as_json = json.loads(json.dumps(original["param_groups"]))  # JSON turns the betas tuple into a list; Adam accepts both
    assert fresh.state_dict()["param_groups"] == as_json
    for index, values in original["state"].items():
        assert all(torch.equal(value, fresh.state_dict()["state"][index][key]) for key, value in values.items())


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("short-run")
    trainer = train(load_config(overrides=tiny_overrides(output, 30, **{"validation.every": 15})))
    return output, trainer


def test_short_run_lowers_the_validation_loss(short_run):
    _, trainer = short_run
    steps = [entry["step"] for entry in trainer.history]
    assert steps == [0, 15, 30]
    assert trainer.history[-1]["l1"] < 0.5 * trainer.history[0]["l1"]
    assert trainer.history[-1]["psnr"] > trainer.history[0]["psnr"] + 3


def test_short_run_writes_the_training_curve(short_run):
    output, _ = short_run
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert "validation_bspline/psnr" in records[0]
    assert [r["step"] for r in records if "loss/pixel" in r] == list(range(1, 31))
    assert {"loss/generator", "loss/critic", "loss/perceptual", "instance_noise_sigma"} <= set(records[-2])


def test_exported_checkpoint_round_trips(short_run):
    output, trainer = short_run
    model, metadata = load_model(output / "model.safetensors")
    expected = trainer.recipe.generator.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())
    assert metadata["method"] == "threeplayer" and metadata["scales"] == [[2.0, 2.0, 2.0]]
    assert metadata["training"]["budget"]["steps"] == 30
    assert metadata["training"]["data"] == [{"name": TRAIN_VOLUME, "source": get_dataset(TRAIN_VOLUME).source}]
    assert metadata["metrics"]["validation"]["step"] == 30


def test_medsr_super_resolve_loads_the_trained_checkpoint(short_run, tmp_path):
    output, _ = short_run
    scan = read_volume(resolve_volume_path(VALIDATION_VOLUME))
    crop = Volume(np.ascontiguousarray(scan.array[80:100, 90:110, 80:96]), scan.spacing, scan.origin, scan.direction)
    write_volume(crop, tmp_path / "lr.nii.gz")
    result = subprocess.run(
        [sys.executable, "-m", "MedSRLib.apps.cli", "super-resolve", str(tmp_path / "lr.nii.gz"),
         str(tmp_path / "sr.nii.gz"), "--method", "threeplayer", "--scale", "2", "--checkpoint",
         str(output / "model.safetensors"), "--patch", "12,12,12"], capture_output=True, text=True, cwd=REPOSITORY)
    assert result.returncode == 0, result.stderr
    sr = read_volume(tmp_path / "sr.nii.gz")
    assert sr.array.shape == (40, 40, 32)
    assert np.allclose(sr.spacing, np.asarray(scan.spacing) / 2)


def saved_step(path: Path) -> int:
    """The step of a saved training state (written atomically, so it is complete whenever it exists), else 0."""
    if not path.is_file():
        return 0
    with safe_open(str(path), framework="pt") as reader:
        return json.loads(reader.metadata()[STATE_KEY])["step"]


@pytest.mark.slow  # about 40 s: a training process is started, killed, resumed, and compared with a straight run
def test_killed_run_resumes_at_the_saved_step_and_matches_an_uninterrupted_run(tmp_path):
    interrupted, uninterrupted = tmp_path / "interrupted", tmp_path / "uninterrupted"
    overrides = tiny_overrides(interrupted, 1000, **{"training.checkpoint_every": 3})
    process = subprocess.Popen([sys.executable, "-m", "Training.train", *sum((["--set", o] for o in overrides), [])],
                               cwd=REPOSITORY, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while saved_step(interrupted / STATE_FILE) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    step = saved_step(interrupted / STATE_FILE)
    assert step >= 3 and step % 3 == 0

    total = step + 4
    resumed = Trainer(load_config(overrides=tiny_overrides(interrupted, total)))
    assert resumed.resume() and resumed.step == step
    resumed.run()
    assert resumed.step == total
    straight = train(load_config(overrides=tiny_overrides(uninterrupted, total)))
    for name, network in straight.recipe.networks.items():  # same batches, noise and optimiser state: same weights
        resumed_state = resumed.recipe.networks[name].state_dict()
        for key, value in network.state_dict().items():
            assert torch.equal(value, resumed_state[key]), (name, key)
