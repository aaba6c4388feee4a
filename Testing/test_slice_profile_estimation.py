"""Slice-profile estimation (grid.slice_profile_estimation) and its use by SMORE: the width of a known-shape profile
recovered from a thick-slice Colin27 crop, wherever the thick axis lies, and SMORE training with the estimate (or with
the profile the user gives, unchanged) and recording it in the output's metadata."""
import numpy as np
import pytest

import MedSRLib
from MedSRLib.errors import InputError
from MedSRLib.grid.degradation import thicken_slices
from MedSRLib.grid.intensity import Normaliser
from MedSRLib.grid.slice_profile_estimation import estimate_slice_profile
from MedSRLib.io.volume import Volume
from MedSRLib.methods.per_scan import training

FACTOR = 4
TOLERANCE = 0.15  # the acceptance: the estimated FWHM within 15 % of the truth


@pytest.fixture(scope="module")
def colin27_crop(colin27) -> np.ndarray:
    """A 96 × 64 × 64 crop of the normalised Colin27 around the brain, k first (the axis made thick)."""
    normalised = Normaliser.fit(colin27.astype(np.float32), clip=True).forward(colin27.astype(np.float32))
    return normalised[40:136, 60:124, 58:122]


def thick(crop, shape, fwhm):
    """The crop made thick ×4 along its first axis with a ``shape`` profile of full width ``fwhm`` voxels."""
    return thicken_slices(crop, 0, FACTOR, shape, gap=FACTOR - fwhm)


@pytest.mark.parametrize("shape, fwhm", [("gaussian", 3.0), ("box", 4.0)])
def test_the_width_of_a_known_shape_is_estimated_within_15_percent_on_a_colin27_crop(colin27_crop, shape, fwhm):
    estimate = estimate_slice_profile(thick(colin27_crop, shape, fwhm), 0, FACTOR, shape)
    assert (estimate.shape, estimate.factor) == (shape, FACTOR)
    assert abs(estimate.fwhm - fwhm) <= TOLERANCE * fwhm
    assert estimate.gap == pytest.approx(FACTOR - estimate.fwhm)


def test_a_thicker_profile_is_estimated_thicker(colin27_crop):
    widths = [estimate_slice_profile(thick(colin27_crop, "gaussian", fwhm), 0, FACTOR).fwhm for fwhm in (2, 3, 4)]
    assert widths[0] < widths[1] < widths[2]


@pytest.mark.parametrize("order", [(1, 0, 2), (2, 1, 0), (1, 2, 0)])
def test_the_thick_axis_may_be_any_array_axis(colin27_crop, order):
    acquired = thick(colin27_crop, "gaussian", 3.0)
    along_first = estimate_slice_profile(acquired, 0, FACTOR)
    permuted = np.ascontiguousarray(acquired.transpose(order))
    before = permuted.copy()
    moved = estimate_slice_profile(permuted, order.index(0), FACTOR)
    assert moved.fwhm == pytest.approx(along_first.fwhm, rel=1e-4)
    np.testing.assert_array_equal(permuted, before)


@pytest.mark.parametrize("arguments, message", [
    ((np.ones((8, 32, 32)), 0, 4), "A constant volume has no structure to estimate a slice profile from."),
    ((np.random.default_rng(0).random((2, 32, 32)), 0, 4), "too small to estimate its slice profile"),
    ((np.random.default_rng(0).random((8, 32, 32)), 0, 4, "triangle"), "Unknown slice profile 'triangle'"),
    ((np.random.default_rng(0).random((8, 32, 32)), 0, 1), "must be above 1 in-plane voxel"),
    ((np.random.default_rng(0).random((8, 32)), 0, 4), "needs a 3D volume"),
])
def test_bad_input_is_one_sentence(arguments, message):
    with pytest.raises(InputError, match=message):
        estimate_slice_profile(*arguments)


# --- SMORE ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def recorded_pairs(monkeypatch):
    """The (profile, gap in voxels) of every degraded_pairs call SMORE makes."""
    calls = []
    original = training.degraded_pairs

    def recording(image, plan, profile="box", gap=0.0):
        calls.append((profile, gap))
        return original(image, plan, profile, gap)

    monkeypatch.setattr(training, "degraded_pairs", recording)
    return calls


def thick_scan(colin27_crop):
    """The crop acquired thick ×4 with a Gaussian profile of FWHM 3 mm, as a scan of 1 × 1 × 4 mm voxels."""
    return Volume(thick(colin27_crop, "gaussian", 3.0), spacing=(1.0, 1.0, float(FACTOR)))


def test_smore_trains_with_the_estimated_profile_and_records_it_in_the_metadata(colin27_crop, recorded_pairs):
    scan = thick_scan(colin27_crop)
    result = MedSRLib.super_resolve(scan, "smore", iterations=1)
    profile = result.metadata["slice_profile"]
    assert (profile["profile"], profile["source"], profile["slice_spacing_mm"]) == (
        "gaussian", "estimated from the scan", 4.0)
    assert abs(profile["fwhm_mm"] - 3.0) <= TOLERANCE * 3.0
    assert profile["gap_mm"] == pytest.approx(4.0 - profile["fwhm_mm"])
    assert recorded_pairs == [("gaussian", pytest.approx(profile["gap_mm"]))]


def test_a_profile_the_user_gives_is_used_unchanged_and_nothing_is_estimated(colin27_crop, recorded_pairs,
                                                                            monkeypatch):
    def refuse(*_):
        raise AssertionError("the profile was estimated although the user gave one")

    monkeypatch.setattr("MedSRLib.methods.smore.estimate_slice_profile", refuse)
    scan = thick_scan(colin27_crop)
    result = MedSRLib.super_resolve(scan, "smore", iterations=1, profile="box", gap=1.5)
    assert result.metadata["slice_profile"] == {"profile": "box", "fwhm_mm": 2.5, "gap_mm": 1.5,
                                                "slice_spacing_mm": 4.0, "source": "given"}
    assert recorded_pairs == [("box", 1.5)]
