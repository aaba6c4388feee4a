import itertools

import pytest
import torch

from MedSRLib.nn.registry import architecture_names, build_network
from MedSRLib.nn.blocks.pixel_shuffle import PixelShuffle3d
from MedSRLib.nn.nets.rrdb import DenseBlock3d, RRDBNet3d


def reshuffle_with_loops(x, factors):
    """Reference: channel c·rd·rh·rw + a·rh·rw + b·rw + e at (d, h, w) goes to (c, d·rd + a, h·rh + b, w·rw + e)."""
    rd, rh, rw = factors
    batch, channels, depth, height, width = x.shape
    out = torch.empty(batch, channels // (rd * rh * rw), depth * rd, height * rh, width * rw)
    for n, channel, d, h, w in itertools.product(*(range(s) for s in x.shape)):
        c, offset = divmod(channel, rd * rh * rw)
        a, rest = divmod(offset, rh * rw)
        b, e = divmod(rest, rw)
        out[n, c, d * rd + a, h * rh + b, w * rw + e] = x[n, channel, d, h, w]
    return out


@pytest.mark.parametrize("scale, factors", [(2, (2, 2, 2)), ((1, 2, 3), (1, 2, 3))])
def test_pixel_shuffle_3d_matches_loop_reference(scale, factors):
    x = torch.randn(2, 2 * factors[0] * factors[1] * factors[2], 2, 3, 2)
    assert torch.equal(PixelShuffle3d(scale)(x), reshuffle_with_loops(x, factors))


def test_pixel_shuffle_3d_reduces_to_torch_2d_shuffle_on_a_flat_axis():
    x = torch.randn(1, 8, 3, 4)
    expected = torch.nn.PixelShuffle(2)(x)
    shuffled = PixelShuffle3d((1, 2, 2))(x.unsqueeze(2)).squeeze(2)
    assert torch.equal(shuffled, expected)


def test_pixel_shuffle_3d_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="divisible by 8"):
        PixelShuffle3d(2)(torch.zeros(1, 12, 2, 2, 2))


def test_dense_block_keeps_shape_and_widths():
    block = DenseBlock3d(features=8, growth=4)
    assert [conv.in_channels for conv in block.convs] + [block.fuse.in_channels] == [8, 12, 16, 20, 24]
    assert block(torch.randn(1, 8, 4, 4, 4)).shape == (1, 8, 4, 4, 4)


@pytest.mark.parametrize("scale, expected", [
    (2, (1, 1, 8, 10, 12)), (1, (1, 1, 4, 5, 6)), ((1, 1, 3), (1, 1, 4, 5, 18))])
def test_rrdb_output_shape(scale, expected):
    net = RRDBNet3d(features=8, growth=4, blocks=1, scale=scale)
    with torch.no_grad():
        assert net(torch.rand(1, 1, 4, 5, 6)).shape == expected


def test_rrdb_default_hyper_parameters_follow_the_paper():
    net = RRDBNet3d()
    assert net.head.out_channels == 64 and len(net.body) == 3
    first_block = net.body[0].dense_blocks[0]
    assert len(net.body[0].dense_blocks) == 3
    assert [conv.in_channels for conv in first_block.convs] == [64, 96, 128, 160]
    assert net.upsample[0].out_channels == 64 * 8 and net.tail[-1].out_channels == 1


def test_residual_convs_start_ten_times_smaller():
    torch.manual_seed(0)
    net = RRDBNet3d(features=16, growth=8, blocks=1)
    residual_std = net.body[0].dense_blocks[0].convs[0].weight.std().item()
    fan_in = 16 * 27
    assert residual_std == pytest.approx(0.1 * (2 / fan_in) ** 0.5, rel=0.1)
    assert net.trunk.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)


def test_rrdb_is_registered_and_built_from_metadata():
    assert "rrdb3d" in architecture_names()
    net = build_network("rrdb3d", {"features": 8, "growth": 4, "blocks": 2, "scale": 2})
    assert isinstance(net, RRDBNet3d) and len(net.body) == 2


def test_flops_per_output_voxel_counts_a_convolution_by_hand():
    from MedSRLib.engine.cost import flops_per_output_voxel
    # One 3×3×3 conv, 1 → 1 channel: 27 multiply-adds (54 FLOPs) per output voxel; a nearest ×2 upsampling after it
    # spreads them over 8 output voxels.
    conv = torch.nn.Conv3d(1, 1, 3, padding=1, bias=False)
    assert flops_per_output_voxel(conv, (6, 5, 4)) == 54
    upsampled = torch.nn.Sequential(conv, torch.nn.Upsample(scale_factor=2))
    assert flops_per_output_voxel(upsampled, (6, 5, 4)) == 54 / 8
