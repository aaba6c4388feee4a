"""The engine with float and per-axis scales: coordinate-conditioned networks, output windows on the corner-aligned
output grid, 2D slices along any axis, and the same through super_resolve (shape, origin, spacing from geometry)."""
import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

import MedSRLib
from MedSRLib.engine.through_plane import interpolate_and_refine, refine_through_plane
from MedSRLib.engine.tiling import TilingOptions, estimate_memory, run_tiled
from MedSRLib.errors import CheckpointError, InputError
from MedSRLib.grid.geometry import output_grid, output_positions, output_shape
from MedSRLib.grid.spline import corner_aligned_resample
from MedSRLib.methods import base as method_registry
from MedSRLib.methods.network import PatchNetworkMethod, SliceNetworkMethod
from MedSRLib.models.checkpoints import save_checkpoint
from MedSRLib.nn import registry as architecture_registry

OBLIQUE = tuple(np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]).ravel())


class LinearAtCoordinates(nn.Module):
    """A parameter-free arbitrary-scale 'network': samples its input window linearly at the given coordinates,
    clamped at the window's edges. Works in 2D and 3D."""

    def forward(self, x, coordinates, scale):
        ndim = coordinates.shape[1]
        assert scale.shape == (x.shape[0], ndim)
        sizes = torch.tensor(x.shape[2:], dtype=torch.float32)
        # grid_sample wants the last axis first, normalised to [-1, 1] over voxel centres (align_corners=True).
        normalised = [2 * coordinates[:, axis] / max(float(sizes[axis]) - 1, 1) - 1 for axis in range(ndim)]
        grid = torch.stack(normalised[::-1], dim=-1)
        return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def linear_at_output_positions(image, factors):
    """The whole volume sampled linearly at every output voxel's position (edges clamped): what a tiled
    LinearAtCoordinates must give where no window edge is involved."""
    positions = [output_positions(round(n * f), f) for n, f in zip(image.shape, factors)]
    mesh = np.meshgrid(*positions, indexing="ij")
    return ndimage.map_coordinates(image.astype(np.float64), mesh, order=1, mode="nearest").astype(np.float32)


@pytest.fixture
def image():
    return np.random.default_rng(3).random((17, 23, 12), dtype=np.float32)


@pytest.mark.parametrize("factors", [(2.5, 2.5, 2.5), (1.0, 1.5, 3.2), (4.0, 1.0, 1.0), (2.0, 2.0, 2.0)])
def test_3d_float_scales_with_crop_margin_equal_the_whole_volume_result(image, factors):
    options = TilingOptions(patch=10, stride=6, blend="crop-margin", batch_size=3, device="cpu",
                            conditioning="coordinates")
    result = run_tiled(LinearAtCoordinates(), image, factors, options)
    assert result.shape == output_shape(image.shape, factors[::-1]) == tuple(round(n * f) for n, f in
                                                                             zip(image.shape, factors))
    np.testing.assert_allclose(result, linear_at_output_positions(image, factors), atol=2e-6)


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_2d_slices_along_each_axis_at_a_float_scale(image, slice_axis):
    factors = tuple(1.0 if axis == slice_axis else factor for axis, factor in enumerate((2.5, 1.75, 2.0)))
    options = TilingOptions(patch=(9, 8), stride=(5, 4), blend="crop-margin", device="cpu", mode="2d",
                            slice_axis=slice_axis, conditioning="coordinates")
    result = run_tiled(LinearAtCoordinates(), image, factors, options)
    np.testing.assert_allclose(result, linear_at_output_positions(image, factors), atol=2e-6)


@pytest.mark.parametrize("blend", ["gaussian", "average"])
def test_weighted_blending_covers_every_output_voxel_at_float_scales(blend):
    constant = np.full((13, 11, 9), 0.7, dtype=np.float32)
    options = TilingOptions(patch=6, stride=4, blend=blend, device="cpu", conditioning="coordinates")
    result = run_tiled(LinearAtCoordinates(), constant, (2.3, 1.0, 3.7), options)
    assert result.shape == (30, 11, 33)
    np.testing.assert_allclose(result, 0.7, rtol=1e-6)


def test_the_network_sees_window_relative_coordinates_and_the_scale_of_its_window_axes():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x, coordinates, scale):
            seen.append((x.shape, coordinates.clone(), scale.clone()))
            return torch.zeros(x.shape[0], 1, *coordinates.shape[2:])

    options = TilingOptions(patch=(4, 6), stride=(4, 6), blend="average", device="cpu", batch_size=8, mode="2d",
                            slice_axis=1, conditioning="coordinates")
    run_tiled(Recorder(), np.zeros((8, 3, 6), np.float32), (2.5, 1.0, 1.5), options)
    shapes, coordinates, scales = zip(*seen)
    assert shapes[0] == (6, 1, 4, 6)  # 2 windows along k × 3 slices along j
    assert torch.equal(scales[0], torch.tensor([[2.5, 1.5]] * 6))
    # Along k: 20 outputs, windows of floor(4 × 2.5) = 10; the second starts at output 10, input 4.
    np.testing.assert_allclose(coordinates[0][0, 0, :, 0], (np.arange(10) + 0.5) / 2.5 - 0.5)
    np.testing.assert_allclose(coordinates[0][1, 0, :, 0], (np.arange(10, 20) + 0.5) / 2.5 - 0.5 - 4)
    # Along i one window covers the axis: all 9 outputs.
    np.testing.assert_allclose(coordinates[0][0, 1, 0, :], (np.arange(9) + 0.5) / 1.5 - 0.5)


def test_whole_factor_networks_refuse_float_scales_and_the_memory_estimate_counts_coordinates(image):
    with pytest.raises(InputError, match="whole factors"):
        run_tiled(nn.Identity(), image, (2.5, 2.5, 2.5), TilingOptions(patch=8, device="cpu"))
    with pytest.raises(InputError, match="conditioning 'scale'"):
        run_tiled(nn.Identity(), image, 2, TilingOptions(patch=8, device="cpu", conditioning="scale"))
    plain = estimate_memory(image.shape, (2, 2, 2), TilingOptions(patch=8, batch_size=2, activation_factor=0))
    coordinates = estimate_memory(image.shape, (2, 2, 2), TilingOptions(patch=8, batch_size=2, activation_factor=0,
                                                                         conditioning="coordinates"))
    assert coordinates - plain == 4 * 2 * 3 * 16 ** 3  # float32 × batch × 3 axes × output window


def test_too_little_overlap_for_a_float_scale_is_refused(image):
    options = TilingOptions(patch=3, stride=3, blend="average", device="cpu", conditioning="coordinates")
    with pytest.raises(InputError, match="leave gaps"):
        run_tiled(LinearAtCoordinates(), image, (1.3, 1.3, 1.3), options)


def test_through_plane_mode_interpolates_then_refines_one_or_both_orientations():
    image = np.random.default_rng(4).random((6, 10, 9), dtype=np.float32)
    scale_xyz = (1, 1, 2.5)  # array axis 0 is thick
    interpolated = corner_aligned_resample(image, scale_xyz, order=3)
    double = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.constant_(double.weight, 2.0)
    options = TilingOptions(patch=None, blend="average", device="cpu")
    np.testing.assert_allclose(interpolate_and_refine(double, image, scale_xyz, options), 2 * interpolated, rtol=1e-6)

    class RowMean(nn.Module):
        """Not symmetric in rows and columns: shows which axis the network gets as rows."""
        def forward(self, x):
            return x.mean(dim=-2, keepdim=True).expand_as(x)

    # The thick axis (0) is the rows in both orientations: the mean is taken along array axis 0 each time.
    both = refine_through_plane(RowMean(), interpolated, 0, options, orientations=2)
    np.testing.assert_allclose(both, np.broadcast_to(interpolated.mean(axis=0, keepdims=True), interpolated.shape),
                               rtol=1e-5)
    with pytest.raises(InputError, match="one thick axis"):
        interpolate_and_refine(double, image, (2, 2, 1), options)


# --- the same through super_resolve: a registered method whose checkpoint says it is an arbitrary-scale model -------

class ToyArbitraryScale(PatchNetworkMethod):
    name = "test-arbitrary-scale"
    description = "test only"
    default_patch = (10, 10, 10)


class ToyInPlane(SliceNetworkMethod):
    name = "test-in-plane"
    description = "test only"


@pytest.fixture
def arbitrary_scale_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(architecture_registry._ARCHITECTURES, "test_linear_at_coordinates", LinearAtCoordinates)
    for method in (ToyArbitraryScale, ToyInPlane):
        monkeypatch.setitem(method_registry._REGISTRY, method.name, method())

    def write(method, axes, scale_range, **fields):
        metadata = {"method": method, "architecture": {"name": "test_linear_at_coordinates", "params": {}},
                    "scale_range": scale_range, "axes": axes, "conditioning": "coordinates",
                    "patch": [8, 8] if axes != "3d" else [8, 8, 8],
                    "normalisation": {"mode": "percentile", "percentiles": [0.5, 99.5]},
                    "training": {"data": [], "config": {}, "budget": None, "hardware": "none"}, "metrics": {},
                    **fields}
        path = tmp_path / f"{method}.safetensors"
        save_checkpoint(path, {}, metadata)
        return str(path)
    return write


def oblique_volume():
    array = ndimage.gaussian_filter(np.random.default_rng(5).random((14, 18, 16)), 1).astype(np.float32) * 1000
    return MedSRLib.Volume(array, spacing=(0.9, 1.1, 2.0), origin=(10.0, -5.0, 3.0), direction=OBLIQUE)


def test_a_float_scale_through_super_resolve_lands_on_the_geometry_grid(arbitrary_scale_checkpoint):
    checkpoint = arbitrary_scale_checkpoint("test-arbitrary-scale", "3d", {"min": [1, 1, 1], "max": [4, 4, 4]})
    volume = oblique_volume()
    result = MedSRLib.super_resolve(volume, "test-arbitrary-scale", 2.5, checkpoint=checkpoint, device="cpu",
                                    blend="crop-margin", patch=(10, 10, 10), stride=(6, 6, 6))
    grid = output_grid(volume.size, volume.spacing, volume.origin, volume.direction, (2.5, 2.5, 2.5))
    assert result.array.shape == grid.shape == (35, 45, 40)
    np.testing.assert_allclose(result.spacing, (0.36, 0.44, 0.8))
    np.testing.assert_allclose(result.origin, grid.origin)
    np.testing.assert_allclose(np.asarray(volume.origin) + np.asarray(OBLIQUE).reshape(3, 3)
                               @ ((np.asarray(result.spacing) - volume.spacing) / 2), result.origin)
    linear = MedSRLib.super_resolve(volume, "linear", 2.5)
    np.testing.assert_allclose(result.array, linear.array, atol=1e-3)  # intensities up to 1000, float32
    assert result.metadata["checkpoint"] == checkpoint

    with pytest.raises(CheckpointError, match=r"supports the scales any from 1×1×1 to 4×4×4, not 5×5×5"):
        MedSRLib.super_resolve(volume, "test-arbitrary-scale", 5, checkpoint=checkpoint)


def test_an_in_plane_model_runs_on_the_slices_its_scale_leaves_at_1(arbitrary_scale_checkpoint):
    checkpoint = arbitrary_scale_checkpoint("test-in-plane", "2d-in-plane", {"min": [1, 1, 1], "max": [4, 1, 4]},
                                            slice_axis=1, inference_patch=[6, 6], inference_stride=[4, 4])
    volume = oblique_volume()
    result = MedSRLib.super_resolve(volume, "test-in-plane", (2.4, 1, 1.5), checkpoint=checkpoint, device="cpu",
                                    blend="crop-margin")
    linear = MedSRLib.super_resolve(volume, "linear", (2.4, 1, 1.5))
    assert result.array.shape == linear.array.shape == (21, 18, 38)
    np.testing.assert_allclose(result.array, linear.array, atol=1e-3)
    # Factor 1 on z instead: the same model on the slices along k.
    axial = MedSRLib.super_resolve(volume, "test-in-plane", (2, 1.5, 1), checkpoint=checkpoint, device="cpu",
                                   blend="crop-margin")
    np.testing.assert_allclose(axial.array, MedSRLib.super_resolve(volume, "linear", (2, 1.5, 1)).array, atol=1e-3)
    with pytest.raises(CheckpointError, match=r"supports the in-plane scales any from 1×1×1 to 4×1×4 .*not 5×1×1\.5"):
        MedSRLib.super_resolve(volume, "test-in-plane", (5, 1, 1.5), checkpoint=checkpoint, device="cpu")


def test_progress_and_cancel_at_a_float_scale(image):
    from MedSRLib.errors import Cancelled
    options = TilingOptions(patch=8, stride=6, batch_size=2, blend="gaussian", device="cpu", conditioning="coordinates")
    seen = []
    run_tiled(LinearAtCoordinates(), image, (1.5, 2.5, 1.2), options, progress=lambda done, total: seen.append(
        (done, total)))
    windows = 3 * 4 * 2
    assert seen[0] == (0, windows) and seen[-1] == (windows, windows)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    calls = []
    with pytest.raises(Cancelled):
        run_tiled(LinearAtCoordinates(), image, (1.5, 2.5, 1.2), options, cancel=lambda: calls.append(1) or
                  len(calls) > 2)


def test_out_of_memory_fallback_at_a_float_scale_gives_the_same_result(image):
    class OutOfMemoryAboveOneWindow(LinearAtCoordinates):
        def __init__(self):
            super().__init__()
            self.batch_sizes = []

        def forward(self, x, coordinates, scale):
            self.batch_sizes.append(x.shape[0])
            if x.shape[0] > 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().forward(x, coordinates, scale)

    options = TilingOptions(patch=10, stride=6, blend="crop-margin", batch_size=4, device="cpu",
                            conditioning="coordinates")
    model = OutOfMemoryAboveOneWindow()
    result = run_tiled(model, image, (2.5, 1.5, 3.2), options)
    assert model.batch_sizes[:3] == [4, 2, 1] and set(model.batch_sizes[3:]) == {1}
    np.testing.assert_allclose(result, linear_at_output_positions(image, (2.5, 1.5, 3.2)), atol=2e-6)
