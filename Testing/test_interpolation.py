"""Interpolation baselines on the corner-aligned grid, against scipy's zoom and hand-computed values."""
import numpy as np
import pytest
from scipy import ndimage

from MedSRLib.errors import MemoryBudgetError
from MedSRLib.methods import RunSettings, get_method
from MedSRLib.grid.lanczos import lanczos_weights, mirror_index

RNG = np.random.default_rng(0)
IMAGE = RNG.random((9, 10, 11)).astype(np.float32)


@pytest.mark.parametrize("name, order", [("nearest", 0), ("linear", 1), ("bspline", 3)])
def test_spline_methods_equal_scipy_zoom_in_grid_mode(name, order):
    result = get_method(name).run(IMAGE, (2, 3, 2), (1, 1, 1), RunSettings())
    expected = ndimage.zoom(IMAGE, (2, 3, 2), order=order, grid_mode=True, mode="grid-mirror")
    assert result.shape == (18, 30, 22) and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_linear_x2_by_hand():
    line = np.array([0.0, 4.0, 8.0], np.float32).reshape(3, 1, 1) * np.ones((1, 2, 2), np.float32)
    result = get_method("linear").run(line, (1, 1, 2), (1, 1, 1), RunSettings())[:, 0, 0]
    # Output centres at input indices -0.25, 0.25, 0.75, 1.25, 1.75, 2.25; the mirror repeats the edge voxel.
    np.testing.assert_allclose(result, [0, 1, 3, 5, 7, 8])


def test_nearest_repeats_each_voxel():
    result = get_method("nearest").run(IMAGE, (3, 1, 2), (1, 1, 1), RunSettings())
    np.testing.assert_array_equal(result, IMAGE.repeat(2, axis=0).repeat(3, axis=2))


def test_non_integer_scale_gives_rounded_shape():
    result = get_method("bspline").run(IMAGE, (1.5, 1, 2.5), (1, 1, 1), RunSettings())
    assert result.shape == (22, 10, 16)   # round(9·2.5)=22, round(11·1.5)=16


def test_linear_at_non_integer_scales_samples_a_ramp_at_the_corner_aligned_positions():
    k, _, i = np.indices(IMAGE.shape, dtype=np.float32)
    ramp = k + 100 * i
    result = get_method("linear").run(ramp, (1.5, 1, 2.5), (1, 1, 1), RunSettings())
    # Output voxel t of a factor-f axis sits at input index (t + ½)/f − ½; the mirror holds the edge value beyond the
    # first and last voxel centres. Along k (f = 2.5): −0.3, 0.1, …, 8.1; along i (f = 1.5): −⅓, ⅓, …, 9⅔.
    along_k = np.clip((np.arange(22) + 0.5) / 2.5 - 0.5, 0, 8)
    along_i = np.clip((np.arange(16) + 0.5) / 1.5 - 0.5, 0, 10)
    expected = along_k[:, None, None] + 100 * along_i[None, None, :] + np.zeros((1, 10, 1))
    np.testing.assert_allclose(result, expected, atol=1e-3)


def test_lanczos_preserves_constants_and_linear_ramps_inside():
    constant = np.full((6, 6, 6), 2.5, np.float32)
    np.testing.assert_allclose(get_method("lanczos").run(constant, (2, 2, 2), (1, 1, 1), RunSettings()), 2.5, atol=1e-5)
    ramp = np.broadcast_to(np.arange(20, dtype=np.float32)[None, None, :], (3, 3, 20)).copy()
    result = get_method("lanczos").run(ramp, (2, 1, 1), (1, 1, 1), RunSettings())[0, 0]
    inside = slice(8, 32)   # away from the mirrored borders
    expected = (np.arange(40) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(result[inside], expected[inside], atol=0.02)


def test_lanczos_weights_hit_input_samples_at_integer_positions():
    # With factor 1 every output centre is an input centre: the weights are the identity.
    np.testing.assert_allclose(lanczos_weights(7, 7, 1.0), np.eye(7), atol=1e-6)


def test_mirror_index():
    assert mirror_index(np.array([-2, -1, 0, 4, 5, 6]), 5).tolist() == [1, 0, 0, 4, 4, 3]


def test_memory_budget_refusal():
    with pytest.raises(MemoryBudgetError, match="budget"):
        get_method("bspline").run(IMAGE, (8, 8, 8), (1, 1, 1), RunSettings(memory_budget_gb=1e-4))
