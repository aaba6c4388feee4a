"""ArSSR: the decoder's query (nearest LR voxel and offset) by hand at a non-integer factor, the Lanczos skip against
the lanczos method, tiled against untiled output, the checkpoint round trip, and the method end to end through
``medsr super-resolve`` at isotropic and per-axis float scales, with out-of-range scales refused."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSRLib.engine.tiling import TilingOptions, run_tiled
from MedSRLib.grid.geometry import output_coordinates, output_grid
from MedSRLib.grid.lanczos import lanczos_weights
from MedSRLib.models.checkpoints import load_model, save_checkpoint
from MedSRLib.nn.nets.arssr import ArSSR, nearest_voxel
from test_cli import medsr

OBLIQUE = (0.8, -0.6, 0.0, 0.6, 0.8, 0.0, 0.0, 0.0, 1.0)


def coordinates_for(out_shape, factors):
    return torch.from_numpy(output_coordinates(out_shape, factors).astype(np.float32))[None]


def test_each_output_voxel_queries_the_nearest_input_voxel_with_its_offset_at_scale_2_5():
    # Output voxels 0…5 at ×2.5 have centres (o + 0.5) / 2.5 − 0.5 = −0.3, 0.1, 0.5, 0.9, 1.3, 1.7 in input voxels:
    # nearest input voxels 0, 0, 1, 1, 1, 2 (0.5 rounds up) at offsets −0.3, 0.1, −0.5, −0.1, 0.3, −0.3.
    coordinates = coordinates_for((6, 1, 1), (2.5, 1.0, 1.0))[0, 0, :, 0, 0]
    np.testing.assert_allclose(coordinates.numpy(), [-0.3, 0.1, 0.5, 0.9, 1.3, 1.7], atol=1e-6)
    nearest, offsets = nearest_voxel(coordinates, size=3)
    assert nearest.tolist() == [0, 0, 1, 1, 1, 2]
    np.testing.assert_allclose(offsets.numpy(), [-0.3, 0.1, -0.5, -0.1, 0.3, -0.3], atol=1e-6)


def test_the_decoder_reads_the_nearest_voxels_features_with_offset_and_inverse_scale():
    network = ArSSR(features=3, blocks=1, hidden=8, layers=2)
    seen = []
    network.decoder.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    x = torch.rand(1, 1, 3, 2, 2)
    factors = (2.5, 1.0, 1.5)
    network(x, coordinates_for((8, 2, 3), factors), torch.tensor([factors]))
    query = seen[0][0].view(8, 2, 3, 9)
    features = network.head(x) + network.body(network.head(x))
    # Output voxel (2, 1, 2): positions (0.5, 1, 1.1667) → nearest input voxel (1, 1, 1), offsets (−0.5, 0, 0.1667).
    torch.testing.assert_close(query[2, 1, 2, :3], features[0, :, 1, 1, 1])
    torch.testing.assert_close(query[2, 1, 2, 3:6], torch.tensor([-0.5, 0.0, 1 / 6]), atol=1e-6, rtol=0)
    torch.testing.assert_close(query[2, 1, 2, 6:], torch.tensor([1 / 2.5, 1.0, 1 / 1.5]))


def test_the_untrained_lanczos_skip_network_is_the_lanczos_method_at_float_per_axis_scales():
    x = np.random.default_rng(0).random((7, 9, 6), dtype=np.float32)
    factors = (2.5, 1.0, 3.3)
    out_shape = tuple(round(n * f) for n, f in zip(x.shape, factors))
    output = ArSSR(features=4, blocks=1, hidden=8, skip="lanczos")(
        torch.from_numpy(x)[None, None], coordinates_for(out_shape, factors), torch.tensor([factors]))
    expected = x
    for axis, (n, f) in enumerate(zip(out_shape, factors)):
        weights = lanczos_weights(x.shape[axis], n, f)
        expected = np.moveaxis(np.tensordot(weights, np.moveaxis(expected, axis, 0), axes=(1, 0)), 0, axis)
    np.testing.assert_allclose(output[0, 0].detach().numpy(), expected, atol=1e-5)


@pytest.fixture
def trained_looking_network():
    """A small ArSSR whose decoder output is far from zero, so tiling errors would show."""
    torch.manual_seed(0)
    network = ArSSR(features=4, blocks=1, hidden=8, layers=3, skip="lanczos").eval()
    with torch.no_grad():
        network.decoder[-1].weight.normal_(0, 0.5)
    return network


@pytest.mark.parametrize("factors", [(2.4, 2.4, 2.4), (1.0, 1.0, 3.3), (2.0, 2.0, 2.0)])
def test_tiled_output_equals_untiled_output(trained_looking_network, factors):
    image = np.random.default_rng(1).random((14, 17, 12), dtype=np.float32)
    tiled = run_tiled(trained_looking_network, image, factors,
                      TilingOptions(patch=12, stride=4, blend="crop-margin", batch_size=2, device="cpu",
                                    conditioning="coordinates"))
    out_shape = tuple(round(n * f) for n, f in zip(image.shape, factors))
    with torch.no_grad():
        untiled = trained_looking_network(torch.from_numpy(image)[None, None], coordinates_for(out_shape, factors),
                                          torch.tensor([factors]))[0, 0].numpy()
    assert tiled.shape == untiled.shape == out_shape
    np.testing.assert_allclose(tiled, untiled, atol=1e-5)


PARAMS = {"features": 4, "blocks": 1, "hidden": 8, "layers": 3, "skip": "lanczos"}


@pytest.fixture
def checkpoint(tmp_path, trained_looking_network):
    metadata = {"method": "arssr", "architecture": {"name": "arssr", "params": PARAMS},
                "scale_range": {"min": [1, 1, 1], "max": [4, 4, 4]}, "axes": "3d", "conditioning": "coordinates",
                "patch": [16, 16, 16], "inference_patch": [12, 12, 12],
                "normalisation": {"mode": "percentile", "percentiles": [0.5, 99.5]},
                "training": {"data": [], "config": {}, "budget": None, "hardware": "none"}, "metrics": {}}
    path = tmp_path / "arssr.safetensors"
    save_checkpoint(path, trained_looking_network, metadata)
    return path, trained_looking_network


def test_checkpoint_round_trip(checkpoint):
    path, network = checkpoint
    loaded, metadata = load_model(path)
    assert metadata["scale_range"] == {"min": [1, 1, 1], "max": [4, 4, 4]} and metadata["conditioning"] == "coordinates"
    x, factors = torch.rand(1, 1, 5, 6, 4), (1.5, 2.5, 3.0)
    coordinates = coordinates_for((8, 15, 12), factors)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, coordinates, torch.tensor([factors])),
                                   network(x, coordinates, torch.tensor([factors])))



@pytest.mark.parametrize("scale, scale_xyz", [("2.4", (2.4, 2.4, 2.4)), ("1,1,3.3", (1.0, 1.0, 3.3))])
def test_super_resolve_lands_on_the_geometry_output_grid(checkpoint, tmp_path, scale, scale_xyz):
    path, _ = checkpoint
    array = np.random.default_rng(0).random((9, 13, 11)).astype(np.float32) * 100
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.2, 0.9, 3.0))
    image.SetOrigin((3.0, -1.0, 2.0))
    image.SetDirection(OBLIQUE)
    sitk.WriteImage(image, str(tmp_path / "scan.nrrd"))
    result = medsr("super-resolve", tmp_path / "scan.nrrd", tmp_path / "sr.nrrd", "--method", "arssr",
                   "--scale", scale, "--checkpoint", path, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    output = sitk.ReadImage(str(tmp_path / "sr.nrrd"))
    grid = output_grid((11, 13, 9), (1.2, 0.9, 3.0), (3.0, -1.0, 2.0), OBLIQUE, scale_xyz)
    assert output.GetSize() == grid.size
    np.testing.assert_allclose(output.GetSpacing(), grid.spacing)
    np.testing.assert_allclose(output.GetOrigin(), grid.origin, atol=1e-9)
    np.testing.assert_allclose(np.reshape(output.GetDirection(), (3, 3)), np.reshape(OBLIQUE, (3, 3)))


@pytest.mark.parametrize("scale, message", [
    ("4.5", "Checkpoint supports the scales any from 1×1×1 to 4×4×4, not 4.5×4.5×4.5."),
    ("0.5,1,2", "must be at least 1 on every axis")])
def test_a_scale_outside_one_to_four_is_one_sentence_and_exit_2(checkpoint, tmp_path, scale, message):
    path, _ = checkpoint
    array = np.random.default_rng(0).random((6, 6, 6)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "scan.nrrd"))
    refused = medsr("super-resolve", tmp_path / "scan.nrrd", tmp_path / "no.nrrd", "--method", "arssr",
                    "--scale", scale, "--checkpoint", path)
    assert refused.returncode == 2
    assert message in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "no.nrrd").exists()


def test_decoding_in_chunks_gives_the_same_output(trained_looking_network, monkeypatch):
    from MedSRLib.nn.nets import arssr
    x, factors = torch.rand(2, 1, 5, 6, 4), (1.5, 2.5, 3.0)
    coordinates = coordinates_for((8, 15, 12), factors).expand(2, -1, -1, -1, -1)
    scale = torch.tensor([factors] * 2)
    with torch.no_grad():
        whole = trained_looking_network(x, coordinates, scale)
        monkeypatch.setattr(arssr, "DECODER_CHUNK", 97)  # 1440 output voxels in 15 chunks, the last one short
        chunked = trained_looking_network(x, coordinates, scale)
    torch.testing.assert_close(chunked, whole)
