"""MIASSR: the corner-aligned Meta-Upscale projection by hand, Pos2Weight shapes, the filter each output pixel applies,
and the method end to end through ``medsr super-resolve`` at non-integer in-plane scales."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSRLib.grid.geometry import output_positions
from MedSRLib.models.checkpoints import load_model, save_checkpoint
from MedSRLib.nn.nets.miassr import MIASSR, Pos2Weight, meta_positions, sample_bicubic
from test_cli import medsr


def coordinates_for(batch, out_shape, factors):
    axes = [torch.from_numpy(output_positions(n, f)).float() for n, f in zip(out_shape, factors)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None].expand(batch, -1, -1, -1)


def test_each_output_pixel_reads_the_low_resolution_pixel_its_centre_lies_in_at_scale_2_5():
    # Output pixels 0…4 at ×2.5 have centres (o + 0.5) / 2.5 − 0.5 = −0.3, 0.1, 0.5, 0.9, 1.3 in input pixels;
    # +0.5 gives their place from the first pixel's outer corner: 0.2, 0.6, 1.0, 1.4, 1.8.
    pixels, offsets = meta_positions(torch.from_numpy(output_positions(5, 2.5)), size=2)
    assert pixels.tolist() == [0, 0, 1, 1, 1]
    np.testing.assert_allclose(offsets.numpy(), [0.2, 0.6, 0.0, 0.4, 0.8], atol=1e-12)
    pixels, _ = meta_positions(torch.tensor([-0.7, 3.6]), size=3)
    assert pixels.tolist() == [0, 2]  # beyond the border: the edge pixel


def test_pos2weight_and_network_shapes():
    assert Pos2Weight(features=8, hidden=16)(torch.rand(30, 4)).shape == (30, 72)
    network = MIASSR(features=8, blocks=2, hidden=16)
    output = network(torch.rand(3, 1, 10, 12), coordinates_for(3, (25, 18), (2.5, 1.5)), torch.tensor([[2.5, 1.5]] * 3))
    assert output.shape == (3, 1, 25, 18)


def test_pos2weight_runs_once_per_distinct_position_with_the_same_result_as_per_pixel():
    torch.manual_seed(1)
    network = MIASSR(features=4, blocks=1, hidden=8)
    x = torch.rand(2, 1, 6, 7)
    scale = torch.tensor([[2.5, 2.0]] * 2)
    coordinates = coordinates_for(2, (15, 14), (2.5, 2.0))
    calls = []
    network.pos2weight.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    with torch.no_grad():
        output = network(x, coordinates, scale)
    assert calls == [5 * 2]  # 5 row offsets at ×2.5, 2 column offsets at ×2
    # The same output computed pixel by pixel, Pos2Weight applied to every output pixel's position.
    features = network.head(x) + network.body(network.head(x))
    neighbourhoods = torch.nn.functional.unfold(features, 3, padding=1).view(2, 4 * 9, 6, 7)
    by_pixel = torch.zeros(2, 15, 14)
    with torch.no_grad():
        for i in range(15):
            for j in range(14):
                row, row_offset = meta_positions(coordinates[0, 0, i, j], 6)
                column, column_offset = meta_positions(coordinates[0, 1, i, j], 7)
                position = torch.stack([1 / scale[0, 0], 1 / scale[0, 1], row_offset, column_offset])
                weights = network.pos2weight(torch.round(position * 2 ** 16)[None] / 2 ** 16)[0]
                by_pixel[:, i, j] = (neighbourhoods[:, :, row, column] * weights).sum(dim=1)
    np.testing.assert_allclose(output[:, 0].numpy(), by_pixel.numpy(), rtol=1e-5, atol=1e-6)


def test_the_untrained_bicubic_skip_network_is_bicubic_interpolation():
    network = MIASSR(features=8, blocks=2, hidden=16, skip="bicubic")
    x = torch.rand(2, 1, 9, 11)
    coordinates = coordinates_for(2, (27, 15), (3.0, 1.4))
    with torch.no_grad():
        np.testing.assert_array_equal(network(x, coordinates, torch.tensor([[3.0, 1.4]] * 2)).numpy(),
                                      sample_bicubic(x, coordinates).numpy())


def test_meta_upscale_applies_the_predicted_filter_around_the_right_pixel():
    """Features = the input (channel 0), and Pos2Weight predicting the filter 'centre tap of channel 0' for every
    pixel: the output must be nearest-neighbour upsampling with the corner-aligned projection, computed by hand."""
    features = 4
    network = MIASSR(features=features, blocks=1, hidden=8)
    with torch.no_grad():
        network.head.weight.zero_()
        network.head.weight[0, 0, 1, 1] = 1.0
        network.body[-1].weight.zero_()  # features = head(x) + body(head(x)) = head(x)
        last = network.pos2weight.layers[-1]
        last.weight.zero_()
        last.bias.zero_()
        last.bias[4] = 1 / network.pos2weight.fan_in_scale  # channel 0, tap (1, 1) of the 3×3 window
        x = torch.arange(12.0).view(1, 1, 3, 4)
        output = network(x, coordinates_for(1, (7, 10), (2.5, 2.5)), torch.tensor([[2.5, 2.5]]))
    rows = np.floor((np.arange(7) + 0.5) / 2.5).astype(int)      # ⌊c + 0.5⌋ = ⌊(o + 0.5) / s⌋
    columns = np.floor((np.arange(10) + 0.5) / 2.5).astype(int)
    np.testing.assert_allclose(output[0, 0].numpy(), x[0, 0].numpy()[np.ix_(rows, columns)], atol=1e-6)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    network = MIASSR(features=8, blocks=2, hidden=16, skip="bicubic")
    metadata = {"method": "miassr",
                "architecture": {"name": "miassr", "params": {"features": 8, "blocks": 2, "hidden": 16,
                                                              "skip": "bicubic"}},
                "scale_range": {"min": [1.1, 1.1, 1], "max": [4, 4, 1]}, "axes": "2d-in-plane", "slice_axis": 0,
                "conditioning": "coordinates", "patch": [24, 24], "inference_patch": [16, 16],
                "normalisation": {"mode": "percentile", "percentiles": [0.5, 99.5]},
                "training": {"data": [], "config": {}, "budget": None, "hardware": "none"}, "metrics": {}}
    path = tmp_path / "miassr.safetensors"
    save_checkpoint(path, network, metadata)
    return path, network


def test_checkpoint_round_trip(checkpoint):
    path, network = checkpoint
    loaded, metadata = load_model(path)
    assert metadata["scale_range"] == {"min": [1.1, 1.1, 1], "max": [4, 4, 1]}
    for name, tensor in network.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)



def test_end_to_end_at_a_non_integer_in_plane_scale_and_a_refused_one(checkpoint, tmp_path):
    path, _ = checkpoint
    array = np.random.default_rng(0).random((5, 21, 17)).astype(np.float32) * 100
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.2, 0.9, 4.0))
    image.SetOrigin((3.0, -1.0, 2.0))
    sitk.WriteImage(image, str(tmp_path / "scan.nrrd"))
    result = medsr("super-resolve", tmp_path / "scan.nrrd", tmp_path / "sr.nrrd", "--method", "miassr",
                   "--scale", "2.4,1.5,1", "--checkpoint", path, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    output = sitk.ReadImage(str(tmp_path / "sr.nrrd"))
    assert output.GetSize() == (41, 32, 5)  # round(17 · 2.4), round(21 · 1.5), 5
    np.testing.assert_allclose(output.GetSpacing(), (0.5, 0.6, 4.0))
    np.testing.assert_allclose(output.GetOrigin(), (3.0 + (0.5 - 1.2) / 2, -1.0 + (0.6 - 0.9) / 2, 2.0))

    refused = medsr("super-resolve", tmp_path / "scan.nrrd", tmp_path / "no.nrrd", "--method", "miassr",
                    "--scale", "4.5,2,1", "--checkpoint", path)
    assert refused.returncode == 2
    assert "supports the in-plane scales any from 1.1×1.1×1 to 4×4×1" in refused.stderr
    assert "not 4.5×2×1" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "no.nrrd").exists()

    isotropic = medsr("super-resolve", tmp_path / "scan.nrrd", tmp_path / "no.nrrd", "--method", "miassr",
                      "--scale", "2,2,2", "--checkpoint", path)
    assert isotropic.returncode == 2
    assert "super-resolves 2D slices in-plane: give a factor of 1 along the axis the slices are taken along " \
           "(e.g. 4×4×1 for slices along z), not 2×2×2" in isotropic.stderr
    assert len(isotropic.stderr.strip().splitlines()) == 1 and not (tmp_path / "no.nrrd").exists()
