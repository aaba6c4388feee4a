from fractions import Fraction

import numpy as np
import pytest

from MedSRLib.grid import degradation as degrade
from MedSRLib.errors import InputError
from MedSRLib.evaluation.protocol import degrade_protocol


def test_block_mean_matches_hand_computed_means():
    array = np.arange(16, dtype=np.uint8).reshape(2, 2, 4)
    result = degrade.block_mean(array, (2, 2, 2))
    # Block 0 holds 0,1,4,5,8,9,12,13 (mean 6.5); block 1 is the same plus 2.
    np.testing.assert_allclose(result, [[[6.5, 8.5]]])
    assert result.dtype == np.float32


def test_block_mean_refuses_shapes_that_are_not_multiples():
    with pytest.raises(InputError, match="crop_to_multiple"):
        degrade.block_mean(np.zeros((5, 4, 4)), (2, 2, 2))


def test_crop_to_multiple_crops_from_the_end():
    array = np.arange(7 * 5 * 4).reshape(7, 5, 4)
    cropped = degrade.crop_to_multiple(array, (3, 2, 1))
    assert cropped.shape == (6, 4, 4)
    np.testing.assert_array_equal(cropped, array[:6, :4, :])


def test_factors_must_be_whole_numbers_one_per_axis():
    with pytest.raises(InputError):
        degrade.block_mean(np.zeros((4, 4, 4)), (2, 2))
    with pytest.raises(InputError):
        degrade.block_mean(np.zeros((4, 4, 4)), (1.5, 1, 1))


def test_area_average_at_2_5_weighs_partly_covered_voxels():
    ramp = np.arange(8, dtype=np.float32)
    # LR voxel i averages [2.5·i, 2.5·(i+1)): voxels 0, 1 and half of 2; half of 2, then 3 and 4; 5, 6 and half of 7.
    # Floor(8 / 2.5) = 3 voxels: the second half of voxel 7 is dropped.
    expected = [(0 + 1 + 0.5 * 2) / 2.5, (0.5 * 2 + 3 + 4) / 2.5, (5 + 6 + 0.5 * 7) / 2.5]
    assert expected == [0.8, 3.2, 5.8]
    np.testing.assert_allclose(degrade.area_average(ramp, (2.5,)), [0.8, 3.2, 5.8], rtol=1e-6)
    # Axis by axis: a sum of ramps along two axes averages to the sum of the ramps' averages.
    plane = ramp[:, None] + 10 * ramp[None, :]
    np.testing.assert_allclose(degrade.area_average(plane, (2.5, 2.5)),
                               np.add.outer([0.8, 3.2, 5.8], [8, 32, 58]), rtol=1e-6)
    np.testing.assert_allclose(degrade.area_average(plane, (2.5, 1)), np.add.outer([0.8, 3.2, 5.8], 10 * ramp),
                               rtol=1e-6)


def overlap_weighted_means(values: np.ndarray, factor: float) -> np.ndarray:
    """Area averaging along the first axis the slow, obvious way: each voxel [j, j+1) weighted by its overlap with
    [m·f, (m+1)·f)."""
    means = []
    for m in range(int(np.floor(len(values) / factor + 1e-9))):
        low, high = m * factor, (m + 1) * factor
        weights = [max(0.0, min(j + 1, high) - max(j, low)) for j in range(len(values))]
        means.append(np.tensordot(weights, values, axes=1) / factor)
    return np.array(means)


@pytest.mark.parametrize("factor", [2.5, 4 / 3, 2.37, 1.1])
def test_area_average_equals_the_overlap_weighted_mean_for_any_real_factor(factor):
    array = np.random.default_rng(2).random((4, 13, 3))
    expected = np.moveaxis(overlap_weighted_means(np.moveaxis(array, 1, 0), factor), 0, 1)
    np.testing.assert_allclose(degrade.area_average(array, (1, factor, 1)), expected, rtol=1e-10)


def test_area_average_with_whole_factors_is_block_mean():
    array = np.random.default_rng(3).random((6, 9, 8)).astype(np.float32)
    np.testing.assert_array_equal(degrade.area_average(array, (2, 3, 4)), degrade.block_mean(array, (2, 3, 4)))
    assert degrade.area_average(np.zeros((2, 2, 4), np.uint8), (2, 2, 2)).dtype == np.float32


def test_area_average_refuses_bad_factors_and_the_protocol_refuses_factors_that_are_not_simple_fractions():
    with pytest.raises(InputError, match="fraction"):
        degrade.factor_fraction(2.37)
    with pytest.raises(InputError, match="at least 1"):
        degrade.area_average(np.zeros((10, 4, 4)), (0.5, 1, 1))
    with pytest.raises(InputError, match="one factor per array axis"):
        degrade.area_average(np.zeros((10, 4, 4)), (2.5, 1))
    with pytest.raises(InputError, match="smaller"):
        degrade.area_average(np.zeros((2, 4, 4)), (2.5, 1, 1))
    assert degrade.factor_fraction(2.5) == Fraction(5, 2) and degrade.factor_fraction(4 / 3) == Fraction(4, 3)


def test_nearest_picks_the_voxel_at_or_after_each_block_centre():
    ramp = np.arange(12, dtype=float)[:, None, None] * np.ones((1, 2, 2))
    np.testing.assert_array_equal(degrade.downsample_nearest(ramp, (4, 1, 1))[:, 0, 0], [2, 6, 10])
    np.testing.assert_array_equal(degrade.downsample_nearest(ramp, (3, 1, 1))[:, 0, 0], [1, 4, 7, 10])


def test_linear_samples_each_block_centre():
    ramp = np.arange(12, dtype=float)[None, None, :] * np.ones((2, 2, 1))
    # Block centres of a ramp 0..11 at factor 4 lie at 1.5, 5.5, 9.5; at factor 3 at 1, 4, 7, 10.
    np.testing.assert_allclose(degrade.downsample_linear(ramp, (1, 1, 4))[0, 0], [1.5, 5.5, 9.5])
    np.testing.assert_allclose(degrade.downsample_linear(ramp, (1, 1, 3))[0, 0], [1, 4, 7, 10])
    np.testing.assert_allclose(degrade.downsample_linear(ramp, (2, 2, 4)).shape, (1, 1, 3))


def test_kspace_truncation_keeps_low_and_removes_high_frequencies():
    n = 32
    position = np.arange(n)
    low = np.cos(2 * np.pi * 3 * position / n)
    high = np.cos(2 * np.pi * 12 * position / n)
    array = (low + high)[:, None, None] * np.ones((1, 4, 4))
    # ×2 keeps the central 16 frequencies (−8 … 7): frequency 3 stays, frequency 12 goes.
    result = degrade.kspace_truncate(array, (2, 1, 1))
    assert result.shape == array.shape
    np.testing.assert_allclose(result[:, 0, 0], low, atol=1e-10)
    np.testing.assert_allclose(degrade.kspace_truncate(array, (1, 1, 1)), array, atol=1e-10)


def test_box_slices_with_a_whole_factor_are_runs_of_slice_means():
    array = np.random.default_rng(0).random((9, 3, 4)).astype(np.float32)
    result = degrade.thicken_slices(array, axis=0, factor=3)
    np.testing.assert_allclose(result, degrade.block_mean(array, (3, 1, 1)), rtol=1e-6)
    # The last slice that does not fill a whole thick slice is dropped.
    assert degrade.thicken_slices(array[:8], axis=0, factor=3).shape == (2, 3, 4)
    assert degrade.thicken_slices(array, axis=2, factor=2).shape == (9, 3, 2)


def test_fractional_box_slices_weigh_partly_covered_voxels():
    # Thick slice 0 covers HR edges −0.5 … 2.0 (voxels 0, 1 and half of 2), slice 1 covers 2.0 … 4.5.
    weights = degrade.slice_weights(5, 2.5)
    np.testing.assert_allclose(weights, [[0.4, 0.4, 0.2, 0, 0], [0, 0, 0.2, 0.4, 0.4]])


def test_gap_thins_the_slice_around_its_centre():
    # Factor 4 with gap 2: thickness 2 centred at 1.5 covers voxels 1 and 2.
    np.testing.assert_allclose(degrade.slice_weights(4, 4, gap=2), [[0, 0.5, 0.5, 0]])
    with pytest.raises(InputError, match="gap"):
        degrade.slice_weights(8, 2, gap=2)


def test_gaussian_profile_has_the_requested_fwhm():
    factor = 8
    weights = degrade.slice_weights(64, factor, "gaussian")
    np.testing.assert_allclose(weights.sum(axis=1), 1)
    row = weights[4]
    centre = 4.5 * factor - 0.5
    variance = np.sum(row * (np.arange(64) - centre) ** 2)
    sigma = factor / (2 * np.sqrt(2 * np.log(2)))
    # Integrating the profile over each voxel adds the variance of a unit box, 1/12.
    assert variance == pytest.approx(sigma ** 2 + 1 / 12, rel=1e-3)
    constant = np.full((20, 2, 2), 3.0)
    np.testing.assert_allclose(degrade.thicken_slices(constant, 0, 2.7, "gaussian"), 3.0, rtol=1e-6)


def test_unknown_profile_is_refused():
    with pytest.raises(InputError, match="profile"):
        degrade.thicken_slices(np.zeros((4, 4, 4)), 0, 2, profile="triangle")


def test_noise_is_seeded_and_has_the_requested_strength():
    image = np.zeros((40, 40, 40), dtype=np.float32)
    first = degrade.add_gaussian_noise(image, 0.1, seed=3)
    np.testing.assert_array_equal(first, degrade.add_gaussian_noise(image, 0.1, seed=3))
    assert not np.array_equal(first, degrade.add_gaussian_noise(image, 0.1, seed=4))
    assert first.std() == pytest.approx(0.1, rel=0.02)
    assert first.dtype == np.float32 and not image.any()
    rician = degrade.add_rician_noise(image, 0.1, seed=3)
    # On a zero signal, Rician noise is Rayleigh: mean σ·sqrt(π/2).
    assert rician.min() >= 0
    assert rician.mean() == pytest.approx(0.1 * np.sqrt(np.pi / 2), rel=0.02)


def test_protocol_normalises_crops_and_degrades():
    array = np.random.default_rng(1).integers(0, 1000, (9, 10, 11)).astype(np.int16)
    low, high = np.percentile(array.astype(np.float32), [0.5, 99.5])
    # Normalised with the whole volume's percentiles, then cropped, so every row sees the same intensities.
    normalised = np.clip((array - low) / (high - low), 0, 1)

    hr, lr = degrade_protocol(array, "isotropic", 2)
    assert hr.shape == (8, 10, 10) and lr.shape == (4, 5, 5)
    assert hr.dtype == lr.dtype == np.float32
    np.testing.assert_allclose(hr, normalised[:8, :10, :10], atol=1e-6)
    np.testing.assert_allclose(lr[1, 2, 3], hr[2:4, 4:6, 6:8].mean(), rtol=1e-5)

    # ×2.5 = 5/2: every axis cropped to a multiple of 5.
    hr, lr = degrade_protocol(array, "isotropic", 2.5)
    assert hr.shape == (5, 10, 10) and lr.shape == (2, 4, 4)
    np.testing.assert_array_equal(lr, degrade.area_average(hr, (2.5, 2.5, 2.5)))

    hr, lr = degrade_protocol(array, "inplane", 2)
    assert hr.shape == (8, 10, 10) and lr.shape == (8, 5, 5)
    np.testing.assert_allclose(lr[:, 1, 2], hr[:, 2:4, 4:6].mean(axis=(1, 2)), rtol=1e-5)

    hr, lr = degrade_protocol(array, "thick", 3, axis=1)
    assert hr.shape == (9, 9, 9) and lr.shape == (9, 3, 9)
    np.testing.assert_allclose(lr[:, 1], hr[:, 3:6].mean(axis=1), rtol=1e-5)


def test_protocol_refuses_unknown_modes_and_scales():
    with pytest.raises(InputError, match="degradation"):
        degrade_protocol(np.zeros((4, 4, 4)), "blur", 2)
    with pytest.raises(InputError, match="above 1"):
        degrade_protocol(np.zeros((4, 4, 4)), "thick", 1)
    with pytest.raises(InputError, match="fraction"):
        degrade_protocol(np.zeros((4, 4, 4)), "thick", 2.37)
