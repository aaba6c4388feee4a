"""RDST: the shifted-window attention mask of a hand-built 8×8 case, padding to window multiples and back, the output
shape, a checkpoint round trip, and the method end to end through ``medsr super-resolve`` at in-plane ×4."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSRLib.models.checkpoints import load_model, save_checkpoint
from MedSRLib.nn.blocks.swin import (SwinLayer, crop_to, pad_to_multiple, shift_regions, shifted_window_mask,
                                     window_partition, window_reverse)
from MedSRLib.nn.nets.rdst import RDST
from test_cli import medsr

TINY = {"features": 12, "growth": 6, "blocks": 1, "window": 4, "heads": 2, "upsampler_features": 8, "scale": 4}


def test_shifted_window_regions_and_mask_of_an_8x8_map_with_window_4_and_shift_2():
    # Rolled by −2, rows (and columns) 0–3 of the map were rows 2–5, rows 4–5 were 6–7 and rows 6–7 wrapped round
    # from rows 0–1: three bands per axis, nine regions.
    expected_regions = [[0, 0, 0, 0, 1, 1, 2, 2]] * 4 + [[3, 3, 3, 3, 4, 4, 5, 5]] * 2 + [[6, 6, 6, 6, 7, 7, 8, 8]] * 2
    assert shift_regions(8, 8, window=4, shift=2).tolist() == expected_regions
    # The four 4×4 windows' tokens in row-major order, labelled by region by hand.
    window_regions = [[0] * 16, [1, 1, 2, 2] * 4, [3] * 8 + [6] * 8, [4, 4, 5, 5] * 2 + [7, 7, 8, 8] * 2]
    mask = shifted_window_mask(8, 8, window=4, shift=2)
    assert mask.shape == (4, 16, 16)
    for window, regions in enumerate(window_regions):
        labels = torch.tensor(regions)
        same = labels[:, None] == labels[None, :]
        assert torch.all(mask[window][same] == 0) and torch.all(mask[window][~same] == float("-inf"))
    # The bottom-right window's first token (pixel (4, 4) of the rolled map) attends to its 2×2 corner only.
    assert torch.nonzero(mask[3, 0] == 0).flatten().tolist() == [0, 1, 4, 5]


def test_shifted_attention_does_not_mix_pixels_the_roll_wrapped_round():
    torch.manual_seed(0)
    layer = SwinLayer(features=4, heads=2, window=4, shift=2).eval()
    mask = shifted_window_mask(8, 8, window=4, shift=2)
    x = torch.rand(1, 8, 8, 4)
    changed = x.clone()
    # Pixel (0, 0) shares its rolled window with (7, 7), across the wrap; the change is not a constant over the
    # channels, which the layer norm would remove.
    changed[0, 0, 0] += torch.tensor([1.0, -1.0, 0.5, 0.0])
    with torch.no_grad():
        difference = (layer(changed, mask) - layer(x, mask)).abs().sum(dim=-1)[0]
    assert difference[7, 7] == 0
    assert difference[1, 1] > 0  # its real neighbour in the same window does see it


def test_window_partition_and_padding_round_trips():
    x = torch.rand(2, 8, 12, 3)
    assert torch.equal(window_reverse(window_partition(x, 4), 4, 8, 12), x)
    image = torch.rand(2, 1, 13, 11)
    padded = pad_to_multiple(image, 8)
    assert padded.shape == (2, 1, 16, 16)
    assert torch.equal(padded[..., 12, :11], image[..., 12, :])  # the padding repeats the edge
    assert torch.equal(crop_to(padded, (13, 11)), image)
    assert pad_to_multiple(torch.rand(1, 1, 16, 8), 8).shape == (1, 1, 16, 8)


def test_output_is_four_times_the_input_for_sizes_that_are_not_window_multiples():
    network = RDST(**TINY).eval()
    with torch.no_grad():
        assert network(torch.rand(2, 1, 13, 10)).shape == (2, 1, 52, 40)
        assert network(torch.rand(1, 1, 3, 5)).shape == (1, 1, 12, 20)


def test_the_thesis_sizes_build_and_refuse_widths_the_heads_do_not_divide():
    rdst_e = RDST(blocks=4)
    assert [block.layers[0].attention.qkv.in_features for block in rdst_e.body[0].dense] == [60, 90, 120]
    assert rdst_e.body[0].fusion.in_channels == 150
    with pytest.raises(ValueError, match="heads"):
        RDST(features=30, growth=15, heads=6)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    params = {**TINY, "skip": "lanczos"}
    network = RDST(**params)
    torch.nn.init.normal_(network.output.weight, std=0.01)  # not the untrained Lanczos identity
    metadata = {"method": "rdst", "architecture": {"name": "rdst", "params": params},
                "scales": [[4, 4, 1]], "axes": "2d-in-plane", "slice_axis": 0, "conditioning": "none",
                "patch": [8, 8], "normalisation": {"mode": "percentile", "percentiles": [0.5, 99.5]},
                "training": {"data": [], "config": {}, "budget": None, "hardware": "none"}, "metrics": {}}
    path = tmp_path / "rdst.safetensors"
    save_checkpoint(path, network, metadata)
    return path, network.eval()


def test_checkpoint_round_trip(checkpoint):
    path, network = checkpoint
    loaded, metadata = load_model(path)
    assert metadata["architecture"]["params"]["window"] == 4
    x = torch.rand(1, 1, 9, 7)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), network(x))



def test_end_to_end_in_plane_x4_and_a_refused_scale(checkpoint, tmp_path):
    path, _ = checkpoint
    array = np.random.default_rng(0).random((3, 13, 11)).astype(np.float32) * 100
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 1.6, 3.0))
    image.SetOrigin((1.0, -2.0, 5.0))
    sitk.WriteImage(image, str(tmp_path / "scan.nrrd"))
    result = medsr("super-resolve", tmp_path / "scan.nrrd", tmp_path / "sr.nrrd", "--method", "rdst",
                   "--scale", "4,4,1", "--checkpoint", path, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    output = sitk.ReadImage(str(tmp_path / "sr.nrrd"))
    assert output.GetSize() == (44, 52, 3)
    np.testing.assert_allclose(output.GetSpacing(), (0.5, 0.4, 3.0))
    np.testing.assert_allclose(output.GetOrigin(), (1.0 + (0.5 - 2.0) / 2, -2.0 + (0.4 - 1.6) / 2, 5.0))

    refused = medsr("super-resolve", tmp_path / "scan.nrrd", tmp_path / "no.nrrd", "--method", "rdst",
                    "--scale", "2,2,1", "--checkpoint", path)
    assert refused.returncode == 2
    assert ("supports the in-plane scales 4×4×1 (their two in-plane factors on any slice axis), not 2×2×1"
            in refused.stderr)
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "no.nrrd").exists()
