"""Every registered recipe on small synthetic volumes (no data cache needed): a few steps train, a run resumed from its
saved state ends exactly where an uninterrupted one does, and the exported checkpoint loads with its inference
settings. The tiny networks below exist for these tests only."""
import json
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from MedSRLib.errors import InputError
from MedSRLib.io.volume import Volume
from MedSRLib.io.volume_files import write_volume
from MedSRLib.models.checkpoints import load_model
from MedSRLib.models.inference_settings import InferenceSettings
from MedSRLib.nn import register_architecture
from Training.config import load_config
from Training.trainer import Trainer, train

SIDE = 40


def synthetic_volume(seed: int) -> np.ndarray:
    """Smooth blobs with sharp borders, like tissue in [0, 1]: detail an interpolation loses."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).random((SIDE,) * 3), 2.5)
    smooth = ndimage.gaussian_filter((noise > noise.mean()).astype(np.float32), 0.7)
    return (smooth * 0.8 + 0.1 * (noise - noise.min()) / np.ptp(noise)).astype(np.float32)


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    """(training volume files, validation volume file) written as NIfTI."""
    folder = tmp_path_factory.mktemp("volumes")
    paths = []
    for seed in range(3):
        path = folder / f"volume{seed}.nii.gz"
        write_volume(Volume(synthetic_volume(seed), (1.0, 1.0, 1.0)), path)
        paths.append(str(path))
    return paths[:2], paths[2]


@register_architecture("test_training_upsampler2d")
class Upsampler2d(torch.nn.Module):
    """(B, 1, H, W) → (B, 1, 2H, 2W): nearest ×2 plus a small learned correction."""

    def __init__(self, features: int = 8):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(1, features, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(features, 1, 3, padding=1))

    def forward(self, x):
        upsampled = F.interpolate(x, scale_factor=2, mode="nearest")
        return upsampled + self.body(upsampled)


@register_architecture("test_training_coordinate_net")
class CoordinateNet(torch.nn.Module):
    """model(x, coordinates, scale) for 2D or 3D windows: x and its features sampled (linearly) at the output
    coordinates, refined by a 1×1 conv that also sees the scale. Starts as linear interpolation."""

    def __init__(self, dims: int = 2, features: int = 8):
        super().__init__()
        conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
        self.encode = conv(1, features, 3, padding=1)
        self.decode = conv(features + 1 + dims, 1, 1)
        torch.nn.init.zeros_(self.decode.weight)
        torch.nn.init.zeros_(self.decode.bias)

    def forward(self, x, coordinates, scale):
        sizes = torch.tensor(x.shape[2:], dtype=coordinates.dtype, device=x.device)
        normalised = 2 * coordinates / (sizes - 1).view(1, -1, *[1] * (coordinates.dim() - 2)) - 1
        grid = normalised.flip(1).movedim(1, -1)  # grid_sample wants (x, y[, z]) = the last axis first
        sample = lambda image: F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
        base = sample(x)
        scale_maps = scale.view(*scale.shape, *[1] * (coordinates.dim() - 2)).expand(-1, -1, *coordinates.shape[2:])
        return base + self.decode(torch.cat([sample(torch.relu(self.encode(x))), base, scale_maps], dim=1))


COMMON = {"seed": 5, "training.cpu_threads": 1, "training.log_every": 1, "optimiser.lr": 3.0e-3,
          "validation.crop": 16, "validation.margin": 2, "validation.slices": 8, "validation.patch": 12,
          "data.batch": 2}

class Case(NamedTuple):
    overrides: dict
    metadata: dict        # what the exported checkpoint must say
    falling_loss: str     # a logged loss lower at step 4 than at step 1 ("" where that says nothing)


CASES = {
    "paired-3d": Case({
        "recipe": "paired-3d", "data.hr_patch": 16, "losses.preset": "threeplayer-code",
        "losses.instance_noise.steps_per_epoch": 2,
        "networks.generator.params": {"features": 4, "growth": 4, "blocks": 1, "scale": 2},
        "networks.critic.params": {"filters": [4, 8]}, "networks.feature_extractor.params": {"widths": [4, 4, 4, 4]},
    }, {"axes": "3d", "scales": [[2.0, 2.0, 2.0]], "patch": [8, 8, 8], "inference_patch": [12, 12, 12]},
        "loss/pixel"),
    "paired-2d": Case({
        "recipe": "paired-2d", "scale": [2, 2, 1], "data.hr_patch": 32, "losses.adversarial": 0.01,
        "losses.adversarial_type": "wgan-gp",
        "networks.generator": {"name": "test_training_upsampler2d", "params": {"features": 4}},
        "networks.critic": {"name": "patch_critic2d", "params": {"features": 4}},
    }, {"axes": "2d-in-plane", "slice_axis": 0, "scales": [[2.0, 2.0, 1.0]], "patch": [16, 16]}, "loss/pixel"),
    # MS-GAN: ×4 from two ×2 stages, the ×2 output supervised too, L2, the learning rate divided by 10 from step 3
    # (after the resume, so the resume check covers the schedule).
    "paired-2d-two-stage": Case({
        "recipe": "paired-2d", "method": "msgan", "scale": [4, 4, 1], "data.hr_patch": 32, "data.degradation": "area",
        "losses.pixel_norm": "l2", "losses.intermediate": 0.5, "optimiser.decay_at": [3],
        "networks.generator": {"name": "msgan", "params": {"features": 4, "blocks": 1, "skip": "lanczos"}},
    }, {"axes": "2d-in-plane", "slice_axis": 0, "scales": [[4.0, 4.0, 1.0]], "patch": [8, 8]}, ""),
    # Rows degraded by 2.5 (area) and interpolated back, refined on the HR grid, as TransMRSR or SMORE's network; it
    # starts as the interpolation, so four batches' losses differ by their content more than by what it learns.
    "paired-2d-through-plane": Case({
        "recipe": "paired-2d", "axes": "2d-through-plane", "scale": [1, 1, 2.5], "data.hr_patch": 32,
        "data.degradation": "area",
        "networks.generator": {"name": "edsr2d", "params": {"features": 4, "blocks": 1, "fold": 2}},
    }, {"axes": "2d-through-plane", "scales": [[1.0, 1.0, 2.5]], "patch": [30, 32]}, ""),
    # One model for a range of thick factors (TransMRSR's transmrsr-range-cpu.yaml): one factor per batch, validated
    # at each listed factor.
    "paired-2d-through-plane-range": Case({
        "recipe": "paired-2d", "axes": "2d-through-plane", "scale": [1, 1, 2.5], "data.hr_patch": 32,
        "data.degradation": "area", "scale_range": {"min": [1, 1, 1.5], "max": [1, 1, 3]},
        "validation.scales": [[1, 1, 1.5], [1, 1, 3]],
        "networks.generator": {"name": "edsr2d", "params": {"features": 4, "blocks": 1, "fold": 2}},
    }, {"axes": "2d-through-plane", "scale_range": {"min": [1.0, 1.0, 1.5], "max": [1.0, 1.0, 3.0]}, "patch": [30, 32]},
        ""),
    # One scale per batch, so successive losses are not comparable; test_training_samplers checks the pairs.
    "arbitrary-scale-2d": Case({
        "recipe": "arbitrary-scale", "axes": "2d-in-plane", "slice_axis": 1,
        "scale_range": {"min": [1.5, 1, 1.5], "max": [3, 1, 3]}, "data.hr_patch": 24,
        "networks.generator": {"name": "test_training_coordinate_net", "params": {"dims": 2}},
    }, {"axes": "2d-in-plane", "slice_axis": 1, "conditioning": "coordinates",
        "scale_range": {"min": [1.5, 1.0, 1.5], "max": [3.0, 1.0, 3.0]}, "patch": [8, 8]}, ""),
    "arbitrary-scale-3d": Case({
        "recipe": "arbitrary-scale", "scale_range": {"min": [1, 1, 1.5], "max": [1, 1, 2.5]}, "data.hr_patch": 12,
        "networks.generator": {"name": "test_training_coordinate_net", "params": {"dims": 3}},
    }, {"axes": "3d", "conditioning": "coordinates", "scale_range": {"min": [1.0, 1.0, 1.5], "max": [1.0, 1.0, 2.5]},
        "patch": [4, 12, 12]}, ""),
    "unpaired-cycle": Case({
        "recipe": "unpaired-cycle", "method": "clade", "scale": [1, 1, 2], "data.hr_patch": 32,
        "networks.generator": {"name": "clade_resnet2d", "params": {"features": 4, "blocks": 1}},
        "networks.critic": {"name": "patch_critic2d", "params": {"features": 4}},
        "losses.adversarial": 1.0, "losses.cycle": 1.0, "losses.identity": 1.0, "losses.gradient_mapping": 5.0,
    }, {"axes": "2d-through-plane", "scales": [[1.0, 1.0, 2.0]], "patch": [32, 32]}, "loss/generator"),
    # TransMRSR's stage 1: the prior's unconditional GAN step with R1; the exporter adds the truncation centres.
    "generative-prior": Case({
        "recipe": "generative-prior", "method": "transmrsr", "axes": "2d-through-plane", "scale": [1, 1, 4],
        "data.hr_patch": 32, "data.degradation": "area", "losses.r1": 1.0,
        "networks.generator": {"name": "transmrsr", "params": {
            "features": [4, 8], "style_dim": 8, "window": 4, "heads": 2, "decoder_layers": 1, "mlp_ratio": 1.0,
            "shallow_blocks": 1, "mapping_layers": 2, "prior_size": 32, "latent_centres": 3}},
        "networks.critic": {"name": "transmrsr_critic", "params": {"widths": [4, 8, 8]}},
    }, {"axes": "2d-through-plane", "scales": [[1.0, 1.0, 4.0]], "patch": [32, 32]}, ""),
    "feature-pretraining": Case({
        "recipe": "feature-pretraining", "method": "feature-network", "data.hr_patch": 16, "data.batch": 4,
        "networks.feature_extractor.params": {"widths": [4, 4, 8, 8]}, "validation.batches": 2,
    }, {"axes": "3d", "scales": [[1.0, 1.0, 1.0]], "patch": [16, 16, 16]}, "loss/cross_entropy"),
}


def case_config(case: str, data, output, steps: int, **extra) -> dict:
    train_files, validation_file = data
    settings = {**COMMON, **CASES[case].overrides, "output": str(output), "data.train": train_files,
                "validation.volume": validation_file, "training.steps": steps, "validation.every": steps,
                "training.checkpoint_every": steps, **extra}
    return load_config(overrides=[f"{key}={json.dumps(value)}" for key, value in settings.items()])


def losses_of(output) -> list:
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return [record for record in records if any(key.startswith("loss/") for key in record)]


@pytest.mark.parametrize("case", CASES)
def test_recipe_trains_resumes_exactly_and_exports_a_loadable_checkpoint(case, synthetic_data, tmp_path):
    straight = train(case_config(case, synthetic_data, tmp_path / "straight", 4))
    first_half = train(case_config(case, synthetic_data, tmp_path / "resumed", 2))
    resumed = Trainer(case_config(case, synthetic_data, tmp_path / "resumed", 4))
    assert resumed.resume() and resumed.step == 2
    resumed.run()
    for name, network in straight.recipe.networks.items():
        initial = first_half.recipe.networks[name]
        changed = False
        for key, value in network.state_dict().items():
            assert torch.equal(value, resumed.recipe.networks[name].state_dict()[key]), (name, key)
            changed |= not torch.equal(value, initial.state_dict()[key])
        assert changed, f"{name} did not train between steps 2 and 4"
    # The trainer set the last step's scheduled rate (the two-stage case's is decayed).
    assert {group["lr"] for optimiser in straight.recipe.optimisers.values() for group in optimiser.param_groups} == {
        straight.recipe.learning_rate(3)}
    losses = losses_of(tmp_path / "straight")
    assert [record["step"] for record in losses] == [1, 2, 3, 4]
    assert all(np.isfinite(value) for record in losses for value in record.values())
    falling = CASES[case].falling_loss
    assert not falling or losses[-1][falling] < losses[0][falling]

    model, metadata = load_model(tmp_path / "straight" / "model.safetensors")
    expected = CASES[case].metadata
    assert {key: metadata.get(key) for key in expected} == expected
    assert metadata["training"]["budget"]["steps"] == 4 and metadata["metrics"]["validation"]["step"] == 4
    InferenceSettings.from_metadata(metadata)  # the lead's schema accepts every field written
    exported, _ = straight.recipe.exported
    assert all(torch.equal(value, exported.state_dict()[key]) for key, value in model.state_dict().items())


def test_a_through_plane_range_model_is_validated_at_each_listed_thick_factor(synthetic_data, tmp_path):
    train(case_config("paired-2d-through-plane-range", synthetic_data, tmp_path, 1))
    validation = load_model(tmp_path / "model.safetensors")[1]["metrics"]["validation"]
    assert validation["scales"] == ["1x1x1.5", "1x1x3"]
    assert validation["psnr"] == pytest.approx((validation["psnr_1x1x1.5"] + validation["psnr_1x1x3"]) / 2)
    bspline = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert bspline["validation_bspline/psnr_1x1x1.5"] > bspline["validation_bspline/psnr_1x1x3"]  # thinner is easier


def test_a_gan_stage_starts_from_the_pre_training_stages_model_and_refuses_another_architecture(synthetic_data,
                                                                                                  tmp_path):
    # ESRGAN / mDCSRN: an L1 stage, then the GAN stage initialised from its exported generator.
    pretraining = train(case_config("paired-3d", synthetic_data, tmp_path / "l1", 2, **{
        "losses.preset": None, "losses.perceptual": 0.0, "losses.adversarial": 0.0, "losses.feature_extractor": "none",
        "losses.instance_noise.start": 0.0}))
    assert set(pretraining.recipe.networks) == {"generator"}
    checkpoint = str(tmp_path / "l1" / "model.safetensors")
    gan = Trainer(case_config("paired-3d", synthetic_data, tmp_path / "gan", 2,
                              **{"networks.generator.checkpoint": checkpoint}))
    trained = pretraining.recipe.networks["generator"].state_dict()
    assert all(torch.equal(value, trained[key]) for key, value in gan.recipe.networks["generator"].state_dict().items())
    assert {"critic", "feature_extractor"} <= set(gan.recipe.networks)

    other = {"features": 4, "growth": 4, "blocks": 2, "scale": 2}
    with pytest.raises(InputError, match="holds a 'rrdb3d' with .* not the configured 'rrdb3d'"):
        Trainer(case_config("paired-3d", synthetic_data, tmp_path / "bad", 2,
                            **{"networks.generator.checkpoint": checkpoint, "networks.generator.params": other}))
