"""MS-GAN: the two stages' outputs and what stage 2 reads, the untrained Lanczos-skip network against the lanczos
kernel, the checkpoint round trip, the method end to end through ``medsr super-resolve`` (the in-plane ×4 grid, and
a scale the model does not serve refused in one sentence), and slices taken along the axis the scale leaves at 1."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSRLib.grid.lanczos import lanczos_weights
from MedSRLib.models.checkpoints import load_model, save_checkpoint
from MedSRLib.nn.nets.msgan import MSGANCritic, MSGANGenerator
from test_cli import medsr

PARAMS = {"features": 8, "blocks": 2, "residual_scale": 0.1, "skip": "lanczos"}


def test_the_x4_and_intermediate_x2_outputs_and_stage_2_reads_stage_1s_upsampled_features():
    torch.manual_seed(0)
    network = MSGANGenerator(features=8, blocks=2)
    read = {}
    network.stage2.register_forward_hook(lambda module, inputs, output: read.update(stage2=inputs[0]))
    network.to_image_x2.register_forward_hook(lambda module, inputs, output: read.update(x2=inputs[0]))
    x = torch.rand(3, 1, 10, 7)
    image_x4, image_x2 = network(x, intermediate=True)
    assert image_x4.shape == (3, 1, 40, 28) and image_x2.shape == (3, 1, 20, 14)
    assert read["stage2"].shape == (3, 8, 20, 14)  # features at ×2, not the 1-channel ×2 image
    assert torch.equal(read["stage2"], read["x2"])
    assert torch.equal(network(x), image_x4)


def test_the_critic_halves_the_size_in_each_of_its_4_blocks_doubling_the_channels_and_scores_any_patch_size():
    critic = MSGANCritic(features=8, hidden=32)
    strided = [layer for layer in critic.blocks if isinstance(layer, torch.nn.Conv2d) and layer.stride == (2, 2)]
    assert [(layer.in_channels, layer.out_channels) for layer in strided] == [(8, 16), (16, 32), (32, 64), (64, 128)]
    assert not any(isinstance(layer, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)) for layer in critic.modules())
    for size in (16, 64, 80):
        assert critic(torch.rand(3, 1, size, size)).shape == (3, 1)
    # Per-sample scores (what the gradient penalty needs): one patch's score does not depend on the others.
    patches = torch.rand(2, 1, 64, 64)
    assert torch.allclose(critic(patches)[:1], critic(patches[:1]), atol=1e-6)


def test_the_untrained_lanczos_skip_network_is_the_lanczos_kernel_at_x2_and_x4():
    x = np.random.default_rng(0).random((9, 6), dtype=np.float32)
    with torch.no_grad():
        image_x4, image_x2 = MSGANGenerator(**PARAMS)(torch.from_numpy(x)[None, None], intermediate=True)
    for factor, output in ((4, image_x4), (2, image_x2)):
        rows, columns = (lanczos_weights(n, factor * n, factor) for n in x.shape)
        np.testing.assert_allclose(output[0, 0].numpy(), rows @ x @ columns.T, atol=1e-5)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    network = MSGANGenerator(**PARAMS)
    with torch.no_grad():  # away from the pure Lanczos start, so the tiling is exercised with a learned part
        network.to_image_x4.weight.normal_(0, 0.05)
    metadata = {"method": "msgan", "architecture": {"name": "msgan", "params": PARAMS},
                "scales": [[4, 4, 1]], "axes": "2d-in-plane", "slice_axis": 0, "patch": [16, 16],
                "inference_patch": [12, 12],
                "normalisation": {"mode": "percentile", "percentiles": [0.5, 99.5]},
                "training": {"data": [], "config": {}, "budget": None, "hardware": "none"}, "metrics": {}}
    path = tmp_path / "msgan.safetensors"
    save_checkpoint(path, network, metadata)
    return path, network


def test_checkpoint_round_trip(checkpoint):
    path, network = checkpoint
    loaded, metadata = load_model(path)
    assert metadata["architecture"] == {"name": "msgan", "params": PARAMS}
    assert loaded.state_dict().keys() == network.state_dict().keys()
    for name, tensor in network.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)



def test_end_to_end_in_plane_x4_grid_and_a_refused_scale(checkpoint, tmp_path):
    path, _ = checkpoint
    array = np.random.default_rng(0).random((3, 19, 14)).astype(np.float32) * 100
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 1.6, 5.0))
    image.SetOrigin((1.0, -4.0, 3.0))
    sitk.WriteImage(image, str(tmp_path / "scan.nrrd"))
    result = medsr("super-resolve", tmp_path / "scan.nrrd", tmp_path / "sr.nrrd", "--method", "msgan",
                   "--scale", "4,4,1", "--checkpoint", path, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    output = sitk.ReadImage(str(tmp_path / "sr.nrrd"))
    assert output.GetSize() == (56, 76, 3)
    np.testing.assert_allclose(output.GetSpacing(), (0.5, 0.4, 5.0))
    np.testing.assert_allclose(output.GetOrigin(), (1.0 + (0.5 - 2.0) / 2, -4.0 + (0.4 - 1.6) / 2, 3.0))

    refused = medsr("super-resolve", tmp_path / "scan.nrrd", tmp_path / "no.nrrd", "--method", "msgan",
                    "--scale", "2.5,2.5,1", "--checkpoint", path)
    assert refused.returncode == 2
    assert "4×4×1" in refused.stderr and "2.5×2.5×1" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "no.nrrd").exists()


def test_slices_are_taken_along_the_axis_the_scale_leaves_at_1(checkpoint):
    # --scale 1,4,4 runs the axially trained model on the slices along i (x), rows k and columns j: the same as
    # running it along k on the volume whose axes are reordered to (i, k, j).
    from MedSRLib.api import super_resolve
    from MedSRLib.io.volume import Volume
    path, _ = checkpoint
    array = np.random.default_rng(1).random((9, 7, 3)).astype(np.float32)
    sagittal = super_resolve(Volume(array, (1.0, 1.0, 1.0)), "msgan", (1, 4, 4), checkpoint=str(path), device="cpu")
    assert sagittal.array.shape == (36, 28, 3)
    reordered = super_resolve(Volume(np.ascontiguousarray(array.transpose(2, 0, 1)), (1.0, 1.0, 1.0)), "msgan",
                              (4, 4, 1), checkpoint=str(path), device="cpu")
    np.testing.assert_allclose(sagittal.array, reordered.array.transpose(1, 2, 0), atol=1e-5)


@pytest.mark.parametrize("spacing, expected_size", [
    ((4.0, 0.9, 0.9), (14, 76, 12)),    # thick x (sagittal stack): slices along i, rows k and columns j ×4
    ((0.9, 0.9, 4.0), (56, 76, 3)),     # thick z (axial stack)
    ((1.0, 1.0, 1.0), (56, 76, 3)),     # isotropic: the slices it was trained on (along k)
])
def test_without_a_scale_the_model_runs_on_the_scans_finely_sampled_slices(checkpoint, tmp_path, spacing,
                                                                          expected_size):
    path, _ = checkpoint
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((3, 19, 14)).astype(np.float32))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(tmp_path / "scan.nrrd"))
    result = medsr("super-resolve", tmp_path / "scan.nrrd", tmp_path / "sr.nrrd", "--method", "msgan",
                   "--checkpoint", path, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert sitk.ReadImage(str(tmp_path / "sr.nrrd")).GetSize() == expected_size


def test_two_planes_averages_the_model_on_two_slice_axes_each_with_its_slice_axis_b_splined(checkpoint, tmp_path):
    # 4,4,4 with two_planes: the ×4 in-plane model on the slices along k (x, y ×4) with z B-splined ×4, and on the
    # slices along j (x, z ×4) with y B-splined ×4, averaged; the result is on the corner-aligned ×4 grid.
    from MedSRLib.api import super_resolve
    from MedSRLib.grid.spline import corner_aligned_resample
    from MedSRLib.io.volume import Volume
    path, _ = checkpoint
    volume = Volume(np.random.default_rng(2).random((5, 6, 7)).astype(np.float32), (1.0, 1.0, 2.0),
                    origin=(3.0, -2.0, 1.0))
    progress = []
    both = super_resolve(volume, "msgan", (4, 4, 4), checkpoint=str(path), device="cpu", two_planes=True,
                         progress=lambda done, total: progress.append(done / total))
    axial = super_resolve(volume, "msgan", (4, 4, 1), checkpoint=str(path), device="cpu")
    coronal = super_resolve(volume, "msgan", (4, 1, 4), checkpoint=str(path), device="cpu")
    expected = (corner_aligned_resample(axial.array, (1, 1, 4), order=3)
                + corner_aligned_resample(coronal.array, (1, 4, 1), order=3)) / 2
    assert both.array.shape == (20, 24, 28)
    np.testing.assert_allclose(both.array, expected, atol=1e-5)
    np.testing.assert_allclose(both.spacing, (0.25, 0.25, 0.5))
    # the first output voxel's centre sits 3/8 of an input voxel before the input's first centre, on every axis
    np.testing.assert_allclose(both.origin, (3.0 - 0.375, -2.0 - 0.375, 1.0 - 0.75))
    assert progress == sorted(progress) and progress[-1] == 1.0
    np.testing.assert_array_equal(volume.array, np.random.default_rng(2).random((5, 6, 7)).astype(np.float32))


def test_two_planes_needs_a_factor_above_1_on_every_axis_and_without_it_a_3d_factor_is_refused(checkpoint, tmp_path):
    from MedSRLib.api import super_resolve
    from MedSRLib.errors import InputError
    from MedSRLib.io.volume import Volume
    path, _ = checkpoint
    volume = Volume(np.random.default_rng(3).random((5, 6, 7)).astype(np.float32), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="two_planes is for a factor above 1 on all three axes"):
        super_resolve(volume, "msgan", (4, 4, 1), checkpoint=str(path), device="cpu", two_planes=True)
    with pytest.raises(InputError, match="for a 3D factor use a 3D method"):
        super_resolve(volume, "msgan", (4, 4, 4), checkpoint=str(path), device="cpu")
    result = medsr("super-resolve", "missing.nrrd", tmp_path / "sr.nrrd", "--method", "msgan", "--checkpoint", path,
                   "--scale", "4,4,4", "--two-planes", "--device", "cpu", "--help")
    assert "--two-planes" in result.stdout
