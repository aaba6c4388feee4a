"""ESRGAN's network interpolation between a PSNR-oriented model and its GAN stage (Training.interpolate)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import VALIDATION_VOLUME
from MedSRLib.errors import InputError
from MedSRLib.models.checkpoints import load_checkpoint, load_model, save_checkpoint
from MedSRLib.nn.registry import build_network
from Training import interpolate
from Training.config import load_config
from Training.registry import VALIDATORS
from Training.validators.base import image_scores

REPOSITORY = Path(__file__).resolve().parents[1]
PARAMS = {"features": 4, "growth": 4, "blocks": 1, "scale": 2, "skip": "lanczos"}
VALIDATION = {"validation.volume": VALIDATION_VOLUME, "validation.crop": 32, "validation.margin": 4,
              "validation.patch": 16}
OVERRIDES = [f"{key}={json.dumps(value)}" for key, value in VALIDATION.items()]


MSGAN_PARAMS = {"features": 4, "blocks": 1, "residual_scale": 0.1, "skip": "lanczos"}
MODELS = {  # config, then the stage checkpoints' method, architecture and settings
    "3d": ("threeplayer-x2-cpu.yaml", "esrgan3d", {"name": "rrdb3d", "params": PARAMS},
           {"scales": [[2.0, 2.0, 2.0]], "axes": "3d", "patch": [16, 16, 16]}),
    "2d": ("msgan-x4-cpu.yaml", "msgan", {"name": "msgan", "params": MSGAN_PARAMS},
           {"scales": [[4.0, 4.0, 1.0]], "axes": "2d-in-plane", "slice_axis": 0, "patch": [16, 16]}),
    "through-plane": ("clade-cpu.yaml", "clade",
                      {"name": "clade_resnet2d", "params": {"features": 4, "blocks": 1, "initial_gain": 0.1}},
                      {"scale_range": {"min": [1.0, 1.0, 2.0], "max": [1.0, 1.0, 12.0]}, "axes": "2d-through-plane",
                       "patch": [32, 32]}),
}


def stage(path, seed, architecture=None, kind="3d"):
    """A tiny checkpoint with random weights, as a training stage exports it."""
    _, method, default_architecture, settings = MODELS[kind]
    architecture = architecture or default_architecture
    torch.manual_seed(seed)
    network = build_network(architecture["name"], architecture["params"])
    with torch.no_grad():  # the output convs start at zero (the Lanczos skip): give the blend something to blend
        for parameter in network.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    metadata = {"method": method, **settings, "architecture": architecture,
                "normalisation": {"mode": "percentile", "percentiles": [0.5, 99.5]},
                "training": {"data": [], "config": {}, "budget": {"steps": seed}, "hardware": "test"}, "metrics": {}}
    save_checkpoint(path, network, metadata)
    return path


def test_the_blend_is_the_weighted_mean_of_the_two_stages():
    psnr = {"w": torch.tensor([0.0, 4.0]), "count": torch.tensor(3)}
    gan = {"w": torch.tensor([8.0, 0.0]), "count": torch.tensor(7)}
    assert torch.equal(interpolate.interpolated_state(psnr, gan, 0)["w"], psnr["w"])
    assert torch.equal(interpolate.interpolated_state(psnr, gan, 1)["w"], gan["w"])
    blend = interpolate.interpolated_state(psnr, gan, 0.25)
    assert blend["w"].tolist() == [2.0, 3.0]  # 0.75·(0, 4) + 0.25·(8, 0)
    assert blend["count"].item() == 7  # integer buffers are not blended


@pytest.mark.parametrize("psnr, gan, alpha, message", [
    ({"w": torch.zeros(2)}, {"w": torch.zeros(2)}, 1.5, "between 0 and 1"),
    ({"w": torch.zeros(2)}, {"v": torch.zeros(2)}, 0.5, "different tensors"),
    ({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, 0.5, "shape"),
])
def test_blends_of_different_networks_or_weights_outside_0_1_are_refused(psnr, gan, alpha, message):
    with pytest.raises(InputError, match=message):
        interpolate.interpolated_state(psnr, gan, alpha)


def test_checkpoints_of_different_architectures_are_refused(tmp_path):
    wider = {"name": "rrdb3d", "params": {**PARAMS, "features": 8}}
    psnr, gan = stage(tmp_path / "psnr.safetensors", 1), stage(tmp_path / "gan.safetensors", 2, wider)
    with pytest.raises(InputError, match="differ in 'architecture'"):
        interpolate.write_blend(interpolate.load_stages(str(psnr), str(gan)), 0.5, tmp_path / "out.safetensors", None)
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("kind", ["3d", "2d", "through-plane"])
def test_each_blend_is_scored_by_the_validator_as_in_training(tmp_path, training_volumes, kind):
    psnr, gan = stage(tmp_path / "psnr.safetensors", 1, kind=kind), stage(tmp_path / "gan.safetensors", 2, kind=kind)
    config = REPOSITORY / "Training/configs" / MODELS[kind][0]
    overrides = OVERRIDES + ['validation.slices=4', 'validation.margin=2'] * (kind != "3d")
    rows = interpolate.score_alphas(interpolate.load_stages(str(psnr), str(gan)), str(config), [0, 1], overrides)
    assert [row["model"] for row in rows] == ["bspline", "α = 0", "α = 1"]
    # α = 0 is the PSNR model itself and α = 1 the GAN model, scored as the validator scores them during training.
    resolved = load_config(config, overrides)
    validator = VALIDATORS.get(resolved["validator"])(resolved, torch.device("cpu"))
    for row, path in zip(rows[1:], (psnr, gan)):
        validated = validator.evaluate(load_model(path)[0])[0]
        assert row["psnr"] == pytest.approx(validated["psnr"])
        assert row["edge_sharpness"] > 0 and 0 <= row["piqe"] <= 100
        if kind == "through-plane":  # its validator's own scores, across the thick axis, are kept
            assert (row["edge_sharpness"], row["piqe"]) == pytest.approx((validated["edge_sharpness"], validated["piqe"]))
    assert rows[1]["psnr"] != pytest.approx(rows[2]["psnr"])
    assert rows[0]["psnr"] == pytest.approx(validator.baselines()["bspline"]["psnr"])
    scores, arrays = validator.scored_arrays(load_model(psnr)[0])
    assert scores["psnr"] == pytest.approx(rows[1]["psnr"])
    assert arrays["prediction"].shape == arrays["reference"].shape == arrays["bspline"].shape
    assert image_scores(arrays["bspline"], arrays["reference"], slicewise=kind != "3d")["psnr"] == \
        pytest.approx(rows[0]["psnr"])


def test_the_chosen_blend_is_written_with_both_parents(tmp_path):
    psnr, gan = stage(tmp_path / "psnr.safetensors", 1), stage(tmp_path / "gan.safetensors", 2)

    written = interpolate.write_blend(interpolate.load_stages(str(psnr), str(gan)), 0.4,
                                      tmp_path / "blend" / "model.safetensors", {"psnr": 1.0})
    state, metadata = load_checkpoint(written)
    (psnr_state, psnr_metadata), (gan_state, gan_metadata) = load_checkpoint(psnr), load_checkpoint(gan)
    for name, value in state.items():
        expected = 0.6 * psnr_state[name] + 0.4 * gan_state[name]
        assert np.allclose(value.numpy(), expected.numpy(), atol=1e-6), name
    blend = metadata["training"]["network_interpolation"]
    assert blend["alpha"] == 0.4 and blend["psnr_model"]["weights_sha256"] == psnr_metadata["weights_sha256"]
    assert blend["gan_model"]["weights_sha256"] == gan_metadata["weights_sha256"]
    assert metadata["architecture"] == gan_metadata["architecture"] and metadata["metrics"]["validation"]["psnr"] == 1.0
    assert load_model(written)[1]["method"] == "esrgan3d"


def test_write_without_output_is_one_sentence_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        interpolate.main(["a.safetensors", "b.safetensors", "--config", "c.yaml", "--write", "0.5"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --write ALPHA and --output FILE go together."
