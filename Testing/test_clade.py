"""CLADE: demodulated convs, the generator and critic, the Sobel gradient-mapping loss, and per-scan runs."""
import numpy as np
import pytest
import torch

import MedSRLib
from MedSRLib.errors import InputError
from MedSRLib.grid.geometry import output_grid
from MedSRLib.nn.nets.cyclegan import (CladeGenerator, DemodulatedConv2d, PatchDiscriminator, gradient_mapping_loss,
    sobel_gradients)
from MedSRLib.io.volume import Volume
from test_smore import one_torch_thread, thickened_truth

OBLIQUE = tuple(np.array([[1.0, 0.0, 0.0], [0.0, 0.6, -0.8], [0.0, 0.8, 0.6]]).ravel())


def test_demodulation_normalises_each_output_channel_separately():
    conv = DemodulatedConv2d(2, 2, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[2.0, 0.0], [3.0, 4.0]]).reshape(2, 2, 1, 1))
        conv.bias.copy_(torch.tensor([0.5, -1.0]))
    # Channel 0: 2 / √4 = 1 and 0; channel 1: (3, 4) / √25 = (0.6, 0.8); the 1e-8 is below float precision here.
    torch.testing.assert_close(conv.demodulated_weight().flatten(1), torch.tensor([[1.0, 0.0], [0.6, 0.8]]))
    x = torch.randn(1, 2, 4, 5)
    expected = torch.stack([x[0, 0] + 0.5, 0.6 * x[0, 0] + 0.8 * x[0, 1] - 1.0])[None]
    torch.testing.assert_close(conv(x), expected)
    with torch.no_grad():
        conv.weight[1].mul_(7.0)  # a channel's scale does not matter, and does not leak into the other channel
    torch.testing.assert_close(conv(x), expected)


def test_demodulated_3x3_weights_have_unit_norm_per_output_channel():
    conv = DemodulatedConv2d(3, 5, kernel_size=3)
    norms = conv.demodulated_weight().pow(2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(norms, torch.ones(5))


def test_sobel_gradient_mapping_loss_on_a_vertical_step_edge():
    step = torch.zeros(1, 1, 6, 6)
    step[..., 3:] = 1.0
    along_columns, along_rows = sobel_gradients(step)
    # The x kernel sums (1 + 2 + 1) × the unit step on the two columns beside the edge, and 0 elsewhere.
    expected = torch.zeros(1, 1, 6, 6)
    expected[..., 2:4] = 4.0
    torch.testing.assert_close(along_columns, expected)
    torch.testing.assert_close(along_rows, torch.zeros(1, 1, 6, 6))
    assert gradient_mapping_loss(torch.zeros_like(step), step).item() == pytest.approx(4 * 12 / 36)
    assert gradient_mapping_loss(step + 0.25, step).item() == pytest.approx(0.0, abs=1e-6)  # offsets have no gradient


def test_generator_starts_as_the_identity_on_any_size_and_the_critic_scores_patches():
    generator = CladeGenerator(features=4, blocks=2)
    x = torch.randn(2, 1, 18, 13)
    torch.testing.assert_close(generator(x), x)
    with torch.no_grad():
        generator.output_gain.fill_(1.0)
    assert generator(x).shape == x.shape
    assert PatchDiscriminator(features=4)(torch.randn(3, 1, 32, 32)).shape == (3, 1, 2, 2)


def test_tiny_clade_run_lands_on_the_output_grid_and_its_saved_model_reproduces_it(tmp_path):
    from scipy import ndimage
    array = ndimage.gaussian_filter(np.random.default_rng(0).random((32, 16, 32)), 1.5).astype(np.float32)
    volume = Volume(array * 100, spacing=(1.0, 2.0, 1.0), origin=(1.0, 2.0, 3.0), direction=OBLIQUE)
    model = tmp_path / "clade.safetensors"
    result = MedSRLib.super_resolve(volume, "clade", (1, 2, 1), iterations=2, features=4, from_scratch=True,
                                    save_model=str(model))
    grid = output_grid(volume.size, volume.spacing, volume.origin, volume.direction, (1, 2, 1))
    assert result.array.shape == grid.shape == (32, 32, 32)
    np.testing.assert_allclose(result.origin, grid.origin)
    np.testing.assert_allclose(result.direction, OBLIQUE)
    reused = MedSRLib.super_resolve(volume, "clade", (1, 2, 1), checkpoint=str(model))
    np.testing.assert_array_equal(reused.array, result.array)


# --- against B-spline -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clade_against_truth():
    """(truth, B-spline, CLADE) on the output grid of a 32³ phantom thickened ×4 along z; 30 iterations, seed 0."""
    truth, thick = thickened_truth(factor=4)
    bspline = MedSRLib.super_resolve(thick, "bspline", (1, 1, 4)).array
    with one_torch_thread():
        clade = MedSRLib.super_resolve(thick, "clade", (1, 1, 4), iterations=30, features=8, seed=0,
                                        from_scratch=True).array
    return truth, bspline, clade


def test_a_trained_clade_generator_reaches_the_output(clade_against_truth):
    """Weak on purpose (CLADE stays near the identity, see the next test): the result is not B-spline returned as is.

    Measured (intensities 0-350): the mean |CLADE − B-spline| is 0.012 here (0.006-0.056 over two phantoms × three
    seeds); with the generators held at the identity it is below 1e-5, float32 rounding of the tiled inference."""
    _, bspline, clade = clade_against_truth
    assert clade.shape == bspline.shape == (32, 32, 32)
    assert np.abs(clade - bspline).mean() > 1e-3


@pytest.mark.xfail(strict=True, reason="CLADE's output equals B-spline at CPU budgets (README, per-scan section): the "
                   "mean |CLADE − B-spline| is 0.2% of B-spline's mean error here (0.1-0.8% over seeds; 0.1-0.2% at 100 "
                   "iterations with the default 32 features), SMORE's 30-iteration change is 30%")
def test_a_short_clade_run_changes_the_bspline_result_by_a_sizeable_part_of_its_error(clade_against_truth):
    truth, bspline, clade = clade_against_truth
    assert np.abs(clade - bspline).mean() > 0.05 * np.abs(bspline - truth).mean()


def test_clade_refuses_isotropic_input_and_bad_options():
    volume = Volume(np.random.default_rng(0).random((12, 20, 24)).astype(np.float32), spacing=(1.0, 1.0, 1.0),
                    origin=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel()))
    with pytest.raises(InputError, match="isotropic"):
        MedSRLib.super_resolve(volume, "clade", (1, 1, 2), iterations=1, from_scratch=True)
    with pytest.raises(InputError, match="features"):
        MedSRLib.super_resolve(volume, "clade", (1, 1, 2), iterations=1, force_scale=True, features=1.5,
                                from_scratch=True)
    with pytest.raises(InputError, match="needs through-plane and in-plane slices at least"):
        MedSRLib.super_resolve(volume, "clade", (1, 1, 2), iterations=1, force_scale=True, from_scratch=True)


# --- the shipped (data-set) model -----------------------------------------------------------------------------------

@pytest.fixture
def shipped_clade(tmp_path, monkeypatch):
    """A tiny CLADE generator published in a test catalog as a data-set model: thick factors 2–12 along any axis."""
    import json

    from MedSRLib.files import file_sha256
    from MedSRLib.models.checkpoints import save_checkpoint
    torch.manual_seed(0)
    params = {"features": 4, "blocks": 1}
    generator = CladeGenerator(**params)
    with torch.no_grad():
        generator.output_gain.fill_(0.5)  # away from the identity, so using the model shows in the output
    path = tmp_path / "clade-test.safetensors"
    save_checkpoint(path, generator, {
        "method": "clade", "architecture": {"name": "clade_resnet2d", "params": params},
        "scale_range": {"min": [1, 1, 2], "max": [1, 1, 12]}, "axes": "2d-through-plane", "patch": [32, 32],
        "normalisation": {"mode": "percentile", "percentiles": [0.5, 99.5]},
        "training": {"data": [], "config": {}, "budget": None, "hardware": "none"}, "metrics": {}})
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"schema": 1, "models": [{
        "name": "clade-test", "file": path.name, "sha256": file_sha256(path), "description": "test", "method": "clade",
        "modality": "MR", "contrast": "T1", "domain": "test", "scale_range": {"min": [1, 1, 2], "max": [1, 1, 12]}}]}))
    monkeypatch.setenv("MEDSR_CATALOG", str(catalog))
    return path


def smooth_volume(shape, spacing):
    from scipy import ndimage
    array = ndimage.gaussian_filter(np.random.default_rng(0).random(shape), 1.5).astype(np.float32)
    return Volume(array * 100, spacing=spacing, origin=(1.0, 2.0, 3.0), direction=OBLIQUE)


def test_clade_runs_its_shipped_model_by_default_without_training_on_the_scan(shipped_clade):
    volume = smooth_volume((12, 40, 36), (1.0, 1.0, 3.5))
    default = MedSRLib.super_resolve(volume, "clade")  # scale "auto": z to the in-plane spacing, ×3.5
    explicit = MedSRLib.super_resolve(volume, "clade", (1, 1, 3.5), checkpoint=str(shipped_clade))
    bspline = MedSRLib.super_resolve(volume, "bspline", (1, 1, 3.5))
    assert default.metadata["checkpoint"] == "clade-test" and "per_scan_training" not in default.metadata
    np.testing.assert_array_equal(default.array, explicit.array)
    assert default.array.shape == bspline.array.shape == (42, 40, 36)
    # The model's refinement, not B-spline as is (measured 0.09 on an intensity range of about 15; float noise < 1e-4).
    assert np.abs(default.array - bspline.array).mean() > 0.01


def test_the_shipped_model_serves_a_thick_x_axis_and_the_output_grid_is_right(shipped_clade):
    volume = smooth_volume((36, 40, 10), (4.0, 1.0, 1.0))
    result = MedSRLib.super_resolve(volume, "clade")
    grid = output_grid(volume.size, volume.spacing, volume.origin, volume.direction, (4, 1, 1))
    assert result.array.shape == grid.shape == (36, 40, 40)
    np.testing.assert_allclose(result.spacing, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(result.origin, grid.origin)


def test_fine_tuning_the_shipped_model_trains_it_on_the_scan(shipped_clade):
    volume = smooth_volume((12, 40, 36), (1.0, 1.0, 3.0))
    with one_torch_thread():
        tuned = MedSRLib.super_resolve(volume, "clade", fine_tune=True, iterations=2)
    shipped = MedSRLib.super_resolve(volume, "clade")
    assert tuned.metadata["per_scan_training"]["fine_tuned"] is True
    assert tuned.metadata["per_scan_training"]["iterations"] == 2 and tuned.metadata["checkpoint"] == "clade-test"
    assert np.abs(tuned.array - shipped.array).max() > 1e-4


@pytest.mark.parametrize("method, options, message", [
    ("clade", {"from_scratch": True, "checkpoint": "clade-test"}, "from_scratch=True trains on the scan alone"),
    ("clade", {"iterations": 5}, "iterations=… only apply to training on the scan; the model 'clade-test' is used"),
    ("clade", {"save_model": "kept.safetensors"}, "save_model=… only apply"),
    ("smore", {"fine_tune": True}, "fine_tune=True continues training a model on the scan; give 'smore' a"),
])
def test_contradicting_training_options_are_one_sentence(shipped_clade, method, options, message):
    with pytest.raises(InputError, match=message):
        MedSRLib.super_resolve(smooth_volume((12, 40, 36), (1.0, 1.0, 3.0)), method, **options)
