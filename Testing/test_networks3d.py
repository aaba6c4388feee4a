import json

import numpy as np
import pytest
import torch

from MedSRLib.api import super_resolve
from MedSRLib.models.checkpoints import save_checkpoint
from MedSRLib.grid.degradation import kspace_truncate
from MedSRLib.grid.fourier import fourier_upsample
from MedSRLib.nn.registry import architecture_names, build_network
from MedSRLib.nn.nets.critic3d import PatchCritic3d
from MedSRLib.nn.nets.dcsrn import DCSRN3d
from MedSRLib.nn.nets.resnet3d import ResNet10Features3d
from MedSRLib.io.volume import Volume


def test_new_architectures_are_registered_and_build_from_json_params():
    assert {"patch_critic3d", "resnet10_3d", "dcsrn3d", "rrdb3d"} <= set(architecture_names())
    params = json.loads(json.dumps({"filters": [8, 16]}))
    assert isinstance(build_network("patch_critic3d", params), PatchCritic3d)


def test_patch_critic_gives_a_4_cube_logit_map_for_a_64_cube_patch():
    critic = PatchCritic3d()
    with torch.no_grad():
        assert critic(torch.rand(2, 1, 64, 64, 64)).shape == (2, 1, 4, 4, 4)
    norms = [m for m in critic.layers if isinstance(m, torch.nn.InstanceNorm3d)]
    assert len(norms) == 7  # two per block, none after the first block's first conv


def test_small_patch_critic_halves_per_block():
    with torch.no_grad():
        assert PatchCritic3d(filters=(8, 16))(torch.rand(1, 1, 16, 12, 8)).shape == (1, 1, 4, 3, 2)


def test_resnet10_features_shape_and_depth():
    network = ResNet10Features3d()
    blocks = [m for m in network.modules() if type(m).__name__ == "BasicBlock3d"]
    assert len(blocks) == 4  # ResNet10: [1, 1, 1, 1] BasicBlocks
    with torch.no_grad():
        assert network(torch.rand(2, 1, 64, 64, 64)).shape == (2, 512, 8, 8, 8)


def test_resnet10_rejects_a_wrong_number_of_widths():
    with pytest.raises(ValueError, match="4 stages"):
        ResNet10Features3d(widths=(8, 16))


def test_dcsrn_keeps_the_shape_and_starts_as_identity():
    network = DCSRN3d(growth=4, units=2).eval()
    x = torch.rand(1, 1, 10, 9, 8)
    with torch.no_grad():
        assert torch.equal(network(x), x)
    assert [unit.layers[2].in_channels for unit in network.dense] == [8, 12]
    plain = DCSRN3d(growth=4, units=2, residual=False).eval()
    with torch.no_grad():
        assert plain(x).shape == x.shape


@pytest.mark.parametrize("length", [8, 9])
def test_fourier_upsample_reproduces_a_band_limited_signal_on_the_corner_aligned_grid(length):
    factor, hr_length = 2, 2 * length
    # Physical positions in HR voxels: LR voxel p is centred at (p + 0.5)·2, HR voxel o at o + 0.5.
    def signal(x):
        return np.cos(2 * np.pi * 2 * x / hr_length + 0.3) + 0.5 * np.sin(2 * np.pi * x / hr_length)
    lr = signal((np.arange(length) + 0.5) * factor)[:, None, None] * np.ones((1, 3, 2))
    upsampled = fourier_upsample(lr, (factor, 1, 1))
    assert upsampled.shape == (hr_length, 3, 2) and upsampled.dtype == np.float32
    assert np.abs(upsampled[:, 1, 1] - signal(np.arange(hr_length) + 0.5)).max() < 1e-4


def band_limited_samples(spectrum, positions):
    """The trigonometric polynomial with DFT ``spectrum`` evaluated at (possibly fractional) voxel ``positions``."""
    result = spectrum
    for axis, x in enumerate(positions):
        n = spectrum.shape[axis]
        matrix = np.exp(2j * np.pi * np.outer(x, np.fft.fftfreq(n, 1 / n)) / n) / n
        result = np.moveaxis(np.tensordot(matrix, np.moveaxis(result, axis, 0), axes=1), 0, axis)
    return result.real


def test_fourier_upsample_of_a_real_lr_acquisition_gives_the_kspace_truncated_hr_image():
    """DCSRN's inference input for a real MR acquisition (a LR scan, Fourier-interpolated) is the paper's training input
    (k-space truncation of HR): a LR scan samples the truncated HR image at the LR voxel centres, 2p + 0.5 in HR
    voxels on the corner-aligned grid."""
    truncated = kspace_truncate(np.random.default_rng(0).random((14, 10, 18)), (2, 2, 2))  # odd LR lengths 7, 5, 9
    spectrum = np.fft.fftn(truncated)
    assert np.allclose(band_limited_samples(spectrum, [np.arange(n) for n in truncated.shape]), truncated)
    lr = band_limited_samples(spectrum, [2 * np.arange(n // 2) + 0.5 for n in truncated.shape])
    assert np.allclose(fourier_upsample(lr, (2, 2, 2)), truncated, atol=1e-4)


def test_dcsrn_method_runs_the_network_on_the_fourier_interpolated_grid(tmp_path):
    network = DCSRN3d(growth=4, units=1)  # identity at initialisation: the result is the interpolated input
    metadata = {"method": "dcsrn", "architecture": {"name": "dcsrn3d", "params": {"growth": 4, "units": 1}},
                "scales": [[2, 2, 2]], "axes": "3d", "patch": [16, 16, 16], "normalisation": {"mode": "percentile"},
                "training": {"data": [], "config": {}, "budget": None, "hardware": None}, "metrics": {}}
    save_checkpoint(tmp_path / "dcsrn.safetensors", network, metadata)
    array = np.random.default_rng(0).random((6, 8, 7)).astype(np.float32) * 100
    volume = Volume(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    result = super_resolve(volume, "dcsrn", 2, checkpoint=str(tmp_path / "dcsrn.safetensors"), patch=(8, 8, 8),
                           normalisation="minmax")
    assert result.array.shape == (12, 16, 14)
    assert np.allclose(result.array, fourier_upsample(array, (2, 2, 2)), atol=1e-3)


@pytest.mark.parametrize("shape, factors", [((5, 7, 9), (2, 2, 2)), ((2, 6, 4), (1, 3, 2)), ((4, 4, 4), (3, 1, 1))])
def test_lanczos_layer_equals_the_lanczos_method_including_borders_and_short_axes(shape, factors):
    from MedSRLib.grid.lanczos import lanczos_weights
    from MedSRLib.nn.blocks.interpolation import LanczosUpsample3d
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    expected = image
    for axis, factor in enumerate(factors):
        weights = lanczos_weights(expected.shape[axis], expected.shape[axis] * factor, factor)
        expected = np.moveaxis(np.tensordot(weights, expected, axes=([1], [axis])), 0, axis)
    result = LanczosUpsample3d(factors)(torch.from_numpy(image)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(result, expected, atol=1e-5)


def test_rrdb_with_a_lanczos_skip_starts_as_the_lanczos_method_and_still_learns():
    image = np.random.default_rng(1).random((6, 8, 10)).astype(np.float32)
    network = build_network("rrdb3d", {"features": 8, "growth": 4, "blocks": 1, "scale": 2, "skip": "lanczos"})
    expected = super_resolve(Volume(image, spacing=(1.0, 1.0, 1.0)), "lanczos", 2).array
    with torch.no_grad():
        result = network(torch.from_numpy(image)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(result, expected, atol=1e-5)
    network(torch.rand(1, 1, 4, 4, 4)).square().sum().backward()
    assert network.tail[-1].weight.grad.abs().sum() > 0  # the zero-initialised last conv is trained
    with pytest.raises(Exception, match="skip"):
        build_network("rrdb3d", {"skip": "bicubic"})
