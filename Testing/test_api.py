"""super_resolve: geometry of the result, the input left untouched, options and errors."""
import numpy as np
import pytest

import MedSRLib
from MedSRLib.errors import Cancelled, InputError, MemoryBudgetError

OBLIQUE = np.array([[0.8, -0.6, 0.0], [0.36, 0.48, -0.8], [0.48, 0.64, 0.6]])


def make_volume(shape=(8, 10, 12), spacing=(1.0, 1.0, 3.0), dtype=np.int16):
    rng = np.random.default_rng(1)
    array = (rng.random(shape) * 1000).astype(dtype)
    return MedSRLib.Volume(array, spacing, (10.0, -20.0, 5.0), OBLIQUE.ravel())


def test_bspline_x2_on_an_oblique_volume_gives_the_corner_aligned_grid():
    volume = make_volume(spacing=(0.9, 1.1, 1.3))
    result = MedSRLib.super_resolve(volume, "bspline", 2)
    assert result.array.shape == (16, 20, 24) and result.size == (24, 20, 16)
    np.testing.assert_allclose(result.spacing, (0.45, 0.55, 0.65))
    expected_origin = np.array([10.0, -20.0, 5.0]) + OBLIQUE @ (-np.array([0.45, 0.55, 0.65]) / 2)
    np.testing.assert_allclose(result.origin, expected_origin)
    np.testing.assert_allclose(result.direction, OBLIQUE.ravel())
    assert result.array.dtype == np.float32


def test_through_plane_scale_only_changes_the_thick_axis():
    volume = make_volume()
    result = MedSRLib.super_resolve(volume, "linear", "1,1,3")
    assert result.size == (12, 10, 24)
    np.testing.assert_allclose(result.spacing, (1, 1, 1))
    np.testing.assert_allclose(result.origin, np.array([10.0, -20.0, 5.0]) + OBLIQUE @ np.array([0, 0, -1.0]))
    # Output slice t sits at input slice (t + ½)/3 − ½: t = 3m + 1 on slice m, t = 3m + 2 a third of the way to m + 1;
    # the in-plane voxels are not resampled.
    output, slices = result.array.astype(np.float64), volume.array.astype(np.float64)
    np.testing.assert_allclose(output[1::3], slices, atol=1e-3)
    np.testing.assert_allclose(output[2:21:3], (2 * slices[:-1] + slices[1:]) / 3, atol=1e-3)


def test_intensities_are_mapped_back_to_the_input_range():
    volume = make_volume(spacing=(1, 1, 1))
    result = MedSRLib.super_resolve(volume, "nearest", 2)
    # Nearest-neighbour x2 repeats voxels: after normalising and mapping back the values are the input's.
    np.testing.assert_allclose(result.array[::2, ::2, ::2], volume.array, atol=1e-2)


def test_input_volume_is_not_modified():
    volume = make_volume()
    before = volume.array.copy()
    geometry = (volume.spacing, volume.origin, volume.direction)
    MedSRLib.super_resolve(volume, "lanczos", "2,2,3")
    np.testing.assert_array_equal(volume.array, before)
    assert (volume.spacing, volume.origin, volume.direction) == geometry


@pytest.mark.filterwarnings("ignore:the input volume has only 2 distinct integer values")
@pytest.mark.parametrize("dtype", [np.uint8, np.int16])
def test_output_dtype_input_rounds_and_saturates_at_the_input_types_limits(dtype):
    low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
    array = np.full((8, 10, 12), low, dtype)
    array[:, :, 6:] = high  # a step from the type's minimum to its maximum along x
    volume = MedSRLib.Volume(array, (1.0, 1.0, 1.0))
    floats = MedSRLib.super_resolve(volume, "lanczos", 2).array
    result = MedSRLib.super_resolve(volume, "lanczos", 2, output_dtype="input").array
    assert result.dtype == dtype and result.shape == floats.shape == (16, 20, 24)
    # Lanczos rings past both limits beside the step (by about a tenth of the step, on 2 of every 24 voxels each side):
    # those voxels saturate at the limits instead of wrapping around; the others are rounded to the nearest integer.
    below, above = floats < low, floats > high
    assert below.sum() >= 16 * 20 * 2 and above.sum() >= 16 * 20 * 2
    np.testing.assert_array_equal(result[below], low)
    np.testing.assert_array_equal(result[above], high)
    inside = ~below & ~above
    np.testing.assert_array_equal(result[inside], np.rint(floats[inside]))


def test_provenance_metadata():
    result = MedSRLib.super_resolve(make_volume(), "bspline", "1,1,2")
    assert result.metadata["method"] == "bspline"
    assert result.metadata["scale"] == [1, 1, 2]
    assert result.metadata["medsr_version"] == MedSRLib.__version__
    assert result.metadata["checkpoint_sha256"] is None


def test_progress_is_reported_and_cancel_stops():
    calls = []
    MedSRLib.super_resolve(make_volume(), "bspline", 2, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (1, 1)
    with pytest.raises(Cancelled):
        MedSRLib.super_resolve(make_volume(), "bspline", 2, cancel=lambda: True)


@pytest.mark.parametrize("method, scale, error, message", [
    ("magic", 2, InputError, "Unknown method"),
    ("bspline", 1, InputError, "above 1"),
    ("bspline", 12, InputError, "above 8"),
    ("bspline", (1, 1, 17), InputError, "above 16"),
    ("bspline", "2,2", InputError, "three"),
])
def test_bad_method_or_scale(method, scale, error, message):
    with pytest.raises(error, match=message):
        MedSRLib.super_resolve(make_volume(), method, scale)


def test_output_too_large_for_the_memory_budget():
    with pytest.raises(MemoryBudgetError, match="budget"):
        MedSRLib.super_resolve(make_volume(), "bspline", 8, memory_budget_gb=0.0001)


def test_list_methods_has_the_interpolation_baselines():
    names = {method["name"]: method for method in MedSRLib.list_methods()}
    assert {"nearest", "linear", "bspline", "lanczos"} <= set(names)
    assert names["bspline"]["kind"] == "interpolation" and names["bspline"]["scales"] == "any"


def test_auto_scale_restores_the_in_plane_spacing_along_the_thick_axis():
    volume = make_volume(shape=(8, 10, 12), spacing=(0.8, 0.8, 2.4))
    result = MedSRLib.super_resolve(volume, "linear", "auto")
    np.testing.assert_allclose(result.spacing, (0.8, 0.8, 0.8))
    assert result.size == (12, 10, 24)


def test_auto_scale_on_an_isotropic_volume_is_refused():
    with pytest.raises(InputError, match="isotropic"):
        MedSRLib.super_resolve(make_volume(spacing=(1, 1, 1)), "linear", "auto")


def test_an_option_the_method_does_not_take_is_refused():
    with pytest.raises(InputError, match="'bspline' has no option 'iterations'"):
        MedSRLib.super_resolve(make_volume(), "bspline", 2, iterations=5)
    with pytest.raises(InputError, match="'smore' has no option 'features'"):
        MedSRLib.super_resolve(make_volume(), "smore", "1,1,3", features=8)


@pytest.mark.parametrize("target, message", [
    (0, "must be a positive number of mm"),
    (float("nan"), "must be a positive number of mm"),
    (5.0, "already at or finer than the target spacing 5 mm"),
])
def test_a_bad_target_spacing_is_one_sentence(target, message):
    with pytest.raises(InputError, match=message):
        MedSRLib.super_resolve(make_volume(), "bspline", target_spacing=target)


def test_a_target_spacing_brings_only_the_coarser_axes_to_it():
    volume = make_volume()  # spacing (1, 1, 3) mm
    result = MedSRLib.super_resolve(volume, "bspline", target_spacing=2.0)
    np.testing.assert_allclose(result.spacing, (1.0, 1.0, 2.0))
    assert result.metadata["scale"] == [1.0, 1.0, 1.5]
    with pytest.raises(InputError, match="Give scale=… or target_spacing=…, not both"):
        MedSRLib.super_resolve(volume, "bspline", 2, target_spacing=1.0)
