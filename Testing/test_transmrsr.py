"""TransMRSR: the self-distilled truncation (nearest centre by argmin, a centre stays put), K-means, CWSS on exactly
half the channels, the encoder and decoder shapes of a non-square slice whose sides are not window multiples, the two
training stages chained on synthetic volumes (stage 1's centres and critic trunk carried into stage 2's content and
style loss), and the method end to end through ``medsr super-resolve`` on a small oblique thick-slice volume."""
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSRLib.models.checkpoints import load_model, save_checkpoint
from MedSRLib.nn.nets.transmrsr import (ChannelWiseScaleShift, CriticFeatures, TransMRSR, kmeans,
                                        truncate_toward_nearest)
from Training.config import load_config
from Training.trainer import train

from test_training_recipes import synthetic_data  # noqa: F401  (the fixture of synthetic training volumes)

# Two levels, window 4, 2×2 embedding: slices are padded to multiples of 2·4·2 = 16.
TINY = {"features": [4, 8], "style_dim": 8, "window": 4, "heads": 2, "encoder_layers": 2, "decoder_layers": 1,
        "mlp_ratio": 1.0, "shallow_blocks": 1, "mapping_layers": 2, "prior_size": 32, "latent_centres": 3,
        "truncation": 0.9, "embedding": 2}


def test_truncation_moves_a_latent_toward_its_nearest_centre_and_leaves_a_centre_where_it_is():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    latents = torch.tensor([[9.0, 1.0], [10.0, 0.0], [1.0, 2.0]])
    truncated = truncate_toward_nearest(latents, centres, psi=0.9)
    # [9, 1] is nearest [10, 0] (the authors' argmax picks the farthest, [0, 10]): [10, 0] + 0.9·([9, 1] − [10, 0]).
    torch.testing.assert_close(truncated[0], torch.tensor([9.1, 0.9]))
    assert torch.equal(truncated[1], centres[1])
    torch.testing.assert_close(truncated[2], 0.9 * latents[2])
    # Every latent ends nearer its nearest centre than it started; ψ = 1 changes nothing.
    distances = torch.cdist(latents, centres).min(dim=1).values
    assert torch.all(torch.cdist(truncated, centres).min(dim=1).values <= distances)
    torch.testing.assert_close(truncate_toward_nearest(latents, centres, psi=1.0), latents)


def test_kmeans_finds_separated_clusters_and_the_network_distils_its_centres_into_a_buffer(tmp_path):
    generator = torch.Generator().manual_seed(0)
    means = torch.tensor([[-5.0, 0.0], [5.0, 0.0], [0.0, 8.0]])
    samples = torch.cat([mean + 0.1 * torch.randn(200, 2, generator=generator) for mean in means])
    found = kmeans(samples, 3, iterations=20, generator=generator)
    assert torch.cdist(found, means).min(dim=0).values.max() < 0.1

    network = TransMRSR(**TINY)
    assert torch.count_nonzero(network.latent_centres) == 0
    network.distil_latent_centres(samples=500)
    assert network.latent_centres.shape == (3, 8) and torch.count_nonzero(network.latent_centres) > 0
    latents = network.mapping(torch.randn(4, 8))
    assert not torch.equal(network.truncate(latents), latents)


def test_cwss_scales_and_shifts_exactly_the_second_half_of_the_channels():
    torch.manual_seed(0)
    cwss = ChannelWiseScaleShift(features=6, encoder_features=6, style_dim=4)
    decoder, encoder, latent = torch.rand(2, 6, 5, 7), torch.rand(2, 6, 5, 7), torch.rand(2, 4)
    output = cwss(decoder, encoder, latent)
    assert output.shape == decoder.shape
    assert torch.equal(output[:, :3], decoder[:, :3])
    assert torch.all(output[:, 3:] != decoder[:, 3:])


def test_encoder_and_decoder_shapes_of_a_non_square_slice_that_is_not_a_window_multiple():
    torch.manual_seed(0)
    network = TransMRSR(**TINY).eval()
    x = torch.rand(2, 1, 37, 21)  # padded to 48 × 32, then 24 × 16 after the 2×2 embedding
    masks = network.shift_masks(24, 16, x.device)
    with torch.no_grad():
        shallow = network.shallow(torch.nn.functional.pad(x, (0, 11, 0, 11), mode="replicate"))
        encoder, latents = network.encode(shallow, masks)
        deep = network.decode(network.truncate(latents), masks, encoder)
        assert shallow.shape == (2, 4, 24, 16)
        assert [tuple(level.shape) for level in encoder] == [(2, 4, 24, 16), (2, 8, 12, 8)]
        assert latents.shape == (2, 2, 8)
        assert deep.shape == (2, 4, 24, 16)
        # The untrained network returns its input (the reconstruction's last conv starts at zero), cropped back.
        assert torch.equal(network(x), x)
        torch.nn.init.normal_(network.reconstruction[-2].weight, std=0.1)
        refined = network(x)
        assert refined.shape == x.shape and not torch.equal(refined, x)
        assert network.generate(torch.randn(3, 8)).shape == (3, 1, 32, 32)
    maps = CriticFeatures((4, 8, 8))(torch.rand(1, 1, 37, 21))
    assert [tuple(level.shape) for level in maps] == [(1, 4, 37, 21), (1, 8, 19, 11), (1, 8, 10, 6)]


def stage_config(config_file, data, output, **extra):
    train_files, validation_file = data
    settings = {"output": str(output), "data.train": train_files, "validation.volume": validation_file,
                "training.steps": 2, "training.checkpoint_every": 2, "validation.every": 2, "validation.crop": 16,
                "validation.margin": 2, "data.batch": 2, "data.hr_patch": 32, "training.cpu_threads": 1,
                "networks.generator.params": TINY, **extra}
    return load_config(config_file, [f"{key}={json.dumps(value)}" for key, value in settings.items()])


def test_stage_one_exports_the_centres_and_the_critic_trunk_that_stage_two_starts_from(synthetic_data, tmp_path):
    prior = tmp_path / "prior"
    stage_one = train(stage_config("Training/configs/transmrsr-prior-cpu.yaml", synthetic_data, prior,
                                   **{"networks.critic.params": {"widths": [4, 8, 8]}}))
    assert set(stage_one.recipe.networks) == {"prior", "critic"}
    model, metadata = load_model(prior / "model.safetensors")
    assert metadata["method"] == "transmrsr" and metadata["axes"] == "2d-through-plane"
    assert torch.count_nonzero(model.latent_centres) > 0
    features, feature_metadata = load_model(prior / "critic-features.safetensors")
    assert feature_metadata["method"] == "feature-network" and isinstance(features, CriticFeatures)
    critic = stage_one.recipe.networks["critic"].features.state_dict()
    assert all(torch.equal(value, critic[key]) for key, value in features.state_dict().items())

    stage_two = train(stage_config("Training/configs/transmrsr-x4-cpu.yaml", synthetic_data, tmp_path / "sr", **{
        "networks.generator.checkpoint": str(prior / "model.safetensors"),
        "networks.feature_extractor.params": {"widths": [4, 8, 8]},
        "networks.feature_extractor.checkpoint": str(prior / "critic-features.safetensors")}))
    losses = [json.loads(line) for line in (tmp_path / "sr" / "metrics.jsonl").read_text().splitlines()]
    assert all(record["loss/perceptual"] > 0 for record in losses if "loss/perceptual" in record)
    tuned = stage_two.recipe.networks["generator"]
    assert torch.equal(tuned.latent_centres, model.latent_centres)  # stage 2 keeps the distilled centres
    assert not torch.equal(tuned.reconstruction[-2].weight, model.reconstruction[-2].weight)  # and trains


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    network = TransMRSR(**TINY)
    network.distil_latent_centres(samples=200)
    torch.nn.init.normal_(network.reconstruction[-2].weight, std=0.01)  # not the untrained identity
    metadata = {"method": "transmrsr", "architecture": {"name": "transmrsr", "params": TINY},
                "scales": [[1, 1, 4]], "axes": "2d-through-plane", "conditioning": "none", "patch": [32, 32],
                "normalisation": {"mode": "percentile", "percentiles": [0.5, 99.5]},
                "training": {"data": [], "config": {}, "budget": None, "hardware": "none"}, "metrics": {}}
    path = tmp_path / "transmrsr.safetensors"
    save_checkpoint(path, network, metadata)
    return path


def medsr(*arguments):
    return subprocess.run([sys.executable, "-m", "MedSRLib.apps.cli", *map(str, arguments)], capture_output=True,
                          text=True, timeout=300)


def test_end_to_end_on_an_oblique_thick_volume_one_or_both_orientations_and_a_refused_axis(checkpoint, tmp_path):
    array = np.random.default_rng(0).random((6, 19, 17)).astype(np.float32) * 100  # 6 slices 4 mm thick along k
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 4.0))
    image.SetOrigin((1.0, -2.0, 5.0))
    angle = np.deg2rad(20)
    direction = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    image.SetDirection(direction.flatten().tolist())
    sitk.WriteImage(image, str(tmp_path / "scan.nrrd"))
    outputs = {}
    for name, extra in (("both", []), ("one", ["--no-both-orientations"])):
        # No scale: the thick axis and factor come from the spacing.
        result = medsr("super-resolve", tmp_path / "scan.nrrd", tmp_path / f"{name}.nrrd", "--method", "transmrsr",
                       "--checkpoint", checkpoint, "--device", "cpu", *extra)
        assert result.returncode == 0, result.stderr
        output = sitk.ReadImage(str(tmp_path / f"{name}.nrrd"))
        assert output.GetSize() == (17, 19, 24)
        np.testing.assert_allclose(output.GetSpacing(), (1.0, 1.0, 1.0))
        np.testing.assert_allclose(output.GetDirection(), direction.flatten(), atol=1e-12)
        # Corner-aligned: the origin moves by half the spacing change along the thick axis's direction.
        expected_origin = np.array([1.0, -2.0, 5.0]) + direction[:, 2] * (1.0 - 4.0) / 2
        np.testing.assert_allclose(output.GetOrigin(), expected_origin, atol=1e-9)
        outputs[name] = sitk.GetArrayFromImage(output)
    assert not np.allclose(outputs["both"], outputs["one"])

    refused = medsr("super-resolve", tmp_path / "scan.nrrd", tmp_path / "bad.nrrd", "--method", "transmrsr",
                    "--scale", "4,1,1", "--checkpoint", checkpoint, "--device", "cpu")
    assert refused.returncode != 0 and "give a scale such as 1×1×4, not 4×1×1" in refused.stderr
