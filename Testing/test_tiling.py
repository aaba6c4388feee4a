import numpy as np
import pytest
import torch
from torch import nn

from MedSRLib.errors import Cancelled, CheckpointError, InputError, MemoryBudgetError
from MedSRLib.nn.blocks.pixel_shuffle import PixelShuffle3d
from MedSRLib.models.checkpoints import load_model
from MedSRLib.engine.tiling import TilingOptions, _Placement, estimate_memory, run_tiled
from MedSRLib.engine.devices import autocast_dtype, memory_format, resolve_device, weights_in_layout

BLENDS = ["gaussian", "average", "crop-margin"]


def seeded(module):
    torch.manual_seed(0)
    for parameter in module.parameters():
        nn.init.normal_(parameter, std=0.5)
    return module.eval()


def conv_x2_3d():
    """Fully convolutional ×2 network whose receptive field reaches 2 input voxels from the centre."""
    return seeded(nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv3d(4, 8, 3, padding=1),
                                PixelShuffle3d(2)))


def per_voxel_x2_3d():
    return seeded(nn.Sequential(nn.Conv3d(1, 8, 1), nn.Tanh(), nn.Conv3d(8, 8, 1), PixelShuffle3d(2)))


def conv_x2_2d():
    return seeded(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3, padding=1),
                                nn.PixelShuffle(2)))


def whole_volume(model, image):
    with torch.no_grad():
        return model(torch.from_numpy(image)[None, None])[0, 0].numpy()


class WindowMean(nn.Module):
    """Fills each output window with the mean of its input window, so blending weights become visible."""

    def __init__(self, factors=(1, 1, 1)):
        super().__init__()
        self.factors = factors

    def forward(self, x):
        shape = [n * f for n, f in zip(x.shape[2:], self.factors)]
        return x.mean(dim=(2, 3, 4), keepdim=True).expand(*x.shape[:2], *shape)


@pytest.fixture
def image():
    rng = np.random.default_rng(1)
    return rng.random((17, 23, 12), dtype=np.float32)


def test_crop_margin_3d_x2_equals_whole_volume(image):
    options = TilingOptions(patch=10, stride=6, blend="crop-margin", batch_size=3, device="cpu")
    model = conv_x2_3d()
    tiled = run_tiled(model, image, (2, 2, 2), options)
    assert tiled.shape == (34, 46, 24) and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole_volume(model, image), atol=1e-5)


def test_crop_margin_same_size_model_equals_whole_volume(image):
    model = seeded(nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.Tanh(), nn.Conv3d(3, 1, 3, padding=1)))
    options = TilingOptions(patch=(8, 9, 10), stride=(4, 5, 6), blend="crop-margin", device="cpu")
    np.testing.assert_allclose(run_tiled(model, image, (1, 1, 1), options), whole_volume(model, image), atol=1e-5)


@pytest.mark.parametrize("blend", BLENDS)
def test_per_voxel_model_equals_whole_volume_for_every_blend(image, blend):
    model = per_voxel_x2_3d()
    options = TilingOptions(patch=8, stride=5, blend=blend, device="cpu")
    np.testing.assert_allclose(run_tiled(model, image, (2, 2, 2), options), whole_volume(model, image), atol=1e-5)


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_2d_mode_equals_model_applied_to_each_whole_slice(image, slice_axis):
    model = conv_x2_2d()
    factors = tuple(1 if axis == slice_axis else 2 for axis in range(3))
    options = TilingOptions(patch=9, stride=5, blend="crop-margin", batch_size=7, device="cpu", mode="2d",
                            slice_axis=slice_axis)
    slices = np.moveaxis(image, slice_axis, 0)
    by_hand = np.stack([whole_volume(model, np.ascontiguousarray(s)) for s in slices])
    expected = np.moveaxis(by_hand, 0, slice_axis)
    np.testing.assert_allclose(run_tiled(model, image, factors, options), expected, atol=1e-5)


def test_2d_per_pixel_model_with_gaussian_blend_equals_per_slice(image):
    model = seeded(nn.Sequential(nn.Conv2d(1, 4, 1), nn.Tanh(), nn.Conv2d(4, 4, 1), nn.PixelShuffle(2)))
    options = TilingOptions(patch=(6, 7), blend="gaussian", device="cpu", mode="2d", slice_axis=2)
    expected = np.stack([whole_volume(model, np.ascontiguousarray(image[:, :, i])) for i in range(12)], axis=2)
    np.testing.assert_allclose(run_tiled(model, image, (2, 2, 1), options), expected, atol=1e-5)


def test_input_smaller_than_patch_is_replicate_padded_at_the_far_end():
    image = np.random.default_rng(2).random((5, 14, 7), dtype=np.float32)
    model = conv_x2_3d()
    options = TilingOptions(patch=(8, 8, 10), stride=(8, 4, 10), blend="crop-margin", device="cpu")
    padded = np.pad(image, [(0, 3), (0, 0), (0, 3)], mode="edge")
    expected = whole_volume(model, padded)[:10, :, :14]
    np.testing.assert_allclose(run_tiled(model, image, (2, 2, 2), options), expected, atol=1e-5)


def test_average_blend_by_hand():
    # One row of 12 voxels, windows of 8 at stride 4 start at 0 and 4.
    image = np.arange(12, dtype=np.float32).reshape(1, 1, 12)
    options = TilingOptions(patch=(1, 1, 8), stride=(1, 1, 4), blend="average", device="cpu")
    first, second = np.mean(np.arange(8)), np.mean(np.arange(4, 12))
    expected = [first] * 4 + [(first + second) / 2] * 4 + [second] * 4
    np.testing.assert_allclose(run_tiled(WindowMean(), image, (1, 1, 1), options)[0, 0], expected, rtol=1e-6)


def test_gaussian_blend_by_hand_in_output_voxels():
    # ×2 along the row: output windows of 16 voxels start at 0 and 8; sigma = 16 / 8 = 2 output voxels.
    image = np.arange(12, dtype=np.float32).reshape(1, 1, 12)
    options = TilingOptions(patch=(1, 1, 8), stride=(1, 1, 4), blend="gaussian", device="cpu")
    weight = np.exp(-0.5 * ((np.arange(16) - 7.5) / 2.0) ** 2)
    first_weight, second_weight = np.zeros(24), np.zeros(24)
    first_weight[:16], second_weight[8:] = weight, weight
    first, second = np.mean(np.arange(8)), np.mean(np.arange(4, 12))
    expected = (first * first_weight + second * second_weight) / (first_weight + second_weight)
    tiled = run_tiled(WindowMean((1, 1, 2)), image, (1, 1, 2), options)
    np.testing.assert_allclose(tiled[0, 0], expected, rtol=1e-5)


def test_crop_margin_gives_each_voxel_to_exactly_one_window_including_a_flush_last_window():
    # 21 voxels, patch 8, stride 4: windows start at 0, 4, 8, 12 and (flush with the end) 13.
    # Borders meet mid-overlap: (0+8+4)/2 = 6, 10, 14, (12+8+13)/2 = 16.5 → 33 in ×2 output voxels.
    image = np.repeat(np.arange(21, dtype=np.float32), 1).reshape(1, 1, 21)
    options = TilingOptions(patch=(1, 1, 8), stride=(1, 1, 4), blend="crop-margin", device="cpu")
    tiled = run_tiled(WindowMean((1, 1, 2)), image, (1, 1, 2), options)[0, 0]
    window_means = [3.5, 7.5, 11.5, 15.5, 16.5]
    owners = [0] * 12 + [1] * 8 + [2] * 8 + [3] * 5 + [4] * 9
    np.testing.assert_allclose(tiled, [window_means[n] for n in owners])


def test_progress_counts_windows_monotonically_to_the_total(image):
    calls = []
    options = TilingOptions(patch=8, stride=6, batch_size=4, device="cpu")
    run_tiled(per_voxel_x2_3d(), image, (2, 2, 2), options, progress=lambda done, total: calls.append((done, total)))
    # Windows per axis: 17 → 0, 6, 9; 23 → 0, 6, 12, 15; 12 → 0, 4: 3·4·2 = 24 windows in 6 batches.
    assert calls == [(done, 24) for done in range(0, 25, 4)]


def test_cancel_between_batches_raises_cancelled(image):
    batches = []
    with pytest.raises(Cancelled):
        run_tiled(per_voxel_x2_3d(), image, (2, 2, 2), TilingOptions(patch=8, device="cpu"),
                  progress=lambda done, total: batches.append(done), cancel=lambda: len(batches) > 1)
    assert batches == [0, 4]


def test_estimate_memory_by_hand():
    # 8³ input, ×2, 4³ windows at stride 4: 8 windows; batch 2; 10 activation values per output voxel.
    options = TilingOptions(patch=4, stride=4, batch_size=2, device="cpu", activation_factor=10)
    values = 8 ** 3 + 16 ** 3 + 3 * 16 + 8 ** 3 + 2 * (4 ** 3 + 2 * 8 ** 3) + 2 * 8 ** 3 * 10
    assert estimate_memory((8, 8, 8), (2, 2, 2), options) == 4 * values


def test_memory_budget_refuses_before_running(image):
    calls = []
    model = nn.Sequential(per_voxel_x2_3d(), nn.Identity())
    model.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(MemoryBudgetError, match="memory budget"):
        run_tiled(model, image, (2, 2, 2), TilingOptions(patch=8, device="cpu", memory_budget_gb=1e-4))
    assert calls == []


class OutOfMemoryAboveOneWindow(nn.Module):
    """A per-voxel model that pretends the GPU cannot hold more than one window per batch."""

    def __init__(self):
        super().__init__()
        self.inner = per_voxel_x2_3d()
        self.batch_sizes = []

    def forward(self, x):
        self.batch_sizes.append(x.shape[0])
        if x.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_out_of_memory_halves_the_batch_and_finishes_with_the_same_result(image):
    model = OutOfMemoryAboveOneWindow()
    options = TilingOptions(patch=8, stride=6, batch_size=4, device="cpu")
    tiled = run_tiled(model, image, (2, 2, 2), options)
    assert model.batch_sizes[:3] == [4, 2, 1] and set(model.batch_sizes[3:]) == {1}
    assert len(model.batch_sizes) == 2 + 24
    np.testing.assert_allclose(tiled, whole_volume(model.inner, image), atol=1e-5)


def test_out_of_memory_with_nothing_left_to_try_is_a_memory_error(image):
    class AlwaysOutOfMemory(nn.Module):
        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(MemoryBudgetError, match="smaller patch"):
        run_tiled(AlwaysOutOfMemory(), image, (2, 2, 2), TilingOptions(patch=8, batch_size=2, device="cpu"))


def test_out_of_memory_fallback_order_on_a_gpu():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    placement = _Placement(compute=cuda, stitch=cuda, batch_size=4)
    steps = []
    while placement.degrade():
        steps.append((placement.batch_size, placement.stitch.type, placement.compute.type))
    assert steps == [(2, "cuda", "cuda"), (1, "cuda", "cuda"), (1, "cpu", "cuda"), (1, "cpu", "cpu")]
    assert placement.compute == cpu


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="Unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="not available"):
            resolve_device("cuda")
        if not torch.backends.mps.is_available():
            assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("bf16_supported, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda_runs_in_bfloat16_where_supported_and_channels_last(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_supported)
    assert autocast_dtype(torch.device("cuda")) == expected
    assert memory_format(torch.device("cuda"), 3) == torch.channels_last_3d
    assert memory_format(torch.device("cuda"), 2) == torch.channels_last
    for other in ("cpu", "mps"):
        assert autocast_dtype(torch.device(other)) is None and memory_format(torch.device(other), 3) is None


def test_channels_last_weights_keep_the_output_leave_other_ranks_alone_and_are_restored(image):
    """The CUDA layout, applied here on the CPU: 5D weights become NDHWC, a 4D weight in a 3D network is left as it
    is (Module.to(memory_format=channels_last_3d) would refuse it), the network's output does not change, and after
    the block the weights are back in the default layout and still train (the engine runs inference inside it)."""
    network = conv_x2_3d()
    network.register_buffer("table", torch.arange(16.0).reshape(1, 2, 2, 4))
    batch = torch.from_numpy(image[None, None, :8, :8, :8].copy())
    with torch.no_grad():
        expected = network(batch)
    with weights_in_layout(network, torch.channels_last_3d), torch.inference_mode():
        assert network[2].weight.is_contiguous(memory_format=torch.channels_last_3d)  # 4 input channels: a change
        assert not network[2].weight.is_contiguous()
        assert network.table.is_contiguous()
        result = network(batch.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(result, expected, atol=1e-6, rtol=1e-5)
    assert all(parameter.is_contiguous() for parameter in network.parameters())
    network(batch).sum().backward()
    assert network[2].weight.grad is not None


def test_shipped_3d_model_in_bfloat16_channels_last_stays_close_to_float32(colin27):
    """What a GPU run does (bfloat16 autocast, NDHWC), here with the CPU's bfloat16 autocast on the shipped fast
    ×2 model: the output stays within bfloat16's resolution of the float32 output on a crop of Colin27."""
    network, _ = load_model("threeplayer-fast-x2")
    crop = colin27[84:96, 104:116, 84:96].astype(np.float32) / float(colin27.max())
    batch = torch.from_numpy(crop[None, None])
    with torch.no_grad():
        expected = network(batch)
        with weights_in_layout(network, torch.channels_last_3d), torch.autocast("cpu", torch.bfloat16):
            result = network(batch.contiguous(memory_format=torch.channels_last_3d)).float()
    error = (result - expected).abs()
    assert float(error.max()) < 0.03 and float(error.mean()) < 0.004


@pytest.mark.parametrize("options, factors, message", [
    (TilingOptions(patch=8, stride=9), (2, 2, 2), "must not exceed"),
    (TilingOptions(patch=(8, 8)), (2, 2, 2), "patch size"),
    (TilingOptions(blend="median"), (2, 2, 2), "Unknown blending"),
    (TilingOptions(mode="2d", slice_axis=1, patch=8), (2, 2, 2), "factor must be 1"),
    (TilingOptions(patch=8), (2, 0, 2), "scale factors"),
])
def test_bad_options_are_refused(image, options, factors, message):
    with pytest.raises(InputError, match=message):
        run_tiled(per_voxel_x2_3d(), image, factors, options)


def test_model_with_the_wrong_scale_is_reported(image):
    with pytest.raises(CheckpointError, match="scale"):
        run_tiled(per_voxel_x2_3d(), image, (3, 3, 3), TilingOptions(patch=8, device="cpu"))


def test_input_is_not_modified(image):
    before = image.copy()
    run_tiled(per_voxel_x2_3d(), image, (2, 2, 2), TilingOptions(patch=8, blend="gaussian", device="cpu"))
    np.testing.assert_array_equal(image, before)
