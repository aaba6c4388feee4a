"""Normalisation to [0, 1], its exact inverse, and the output dtype policy."""
import numpy as np
import pytest

from MedSRLib.errors import InputError
from MedSRLib.grid.intensity import Normaliser, cast_output


def test_percentile_normalisation_maps_percentiles_to_0_and_1_and_inverts_exactly():
    array = np.arange(1001, dtype=np.float32)   # percentiles 0.5 / 99.5 are 5 and 995
    normaliser = Normaliser.fit(array)
    assert (normaliser.low, normaliser.high) == pytest.approx((5.0, 995.0))
    forward = normaliser.forward(array)
    assert forward[5] == pytest.approx(0.0) and forward[995] == pytest.approx(1.0)
    assert forward.min() < 0 and forward.max() > 1     # not clipped by default
    np.testing.assert_allclose(normaliser.inverse(forward), array, atol=1e-3)


def test_clipped_normalisation_stays_in_unit_range():
    array = np.arange(1001, dtype=np.float32)
    forward = Normaliser.fit(array, clip=True).forward(array)
    assert forward.min() == 0 and forward.max() == 1


def test_minmax_and_ct_window():
    array = np.array([-1000, 0, 40, 240, 3000], dtype=np.float32)
    assert Normaliser.fit(array, "minmax").forward(array)[[0, -1]] == pytest.approx([0, 1])
    window = Normaliser.fit(array, "window", window=(40, 400))
    assert (window.low, window.high) == (-160, 240)
    assert window.forward(array)[2:4] == pytest.approx([0.5, 1.0])


def test_forward_does_not_modify_its_input():
    array = np.linspace(0, 10, 50).astype(np.float32)
    before = array.copy()
    Normaliser.fit(array, clip=True).forward(array)
    np.testing.assert_array_equal(array, before)


def test_bad_normalisation_options():
    with pytest.raises(InputError, match="Unknown normalisation"):
        Normaliser.fit(np.arange(5.0), "zscore")
    with pytest.raises(InputError, match="window"):
        Normaliser.fit(np.arange(5.0), "window")


def test_collapsed_percentiles_fall_back_to_min_max():
    array = np.zeros(1000, np.float32)
    array[0] = 50
    normaliser = Normaliser.fit(array)
    assert (normaliser.low, normaliser.high) == (0, 50)


def test_output_dtype_policy():
    values = np.array([-3.4, 0.5, 1.5, 254.6, 300.0], np.float32)
    assert cast_output(values, "float32", np.uint8).dtype == np.float32
    np.testing.assert_array_equal(cast_output(values, "input", np.uint8), [0, 0, 2, 255, 255])
    assert cast_output(values, "input", np.int16).tolist() == [-3, 0, 2, 255, 300]
    with pytest.raises(InputError):
        cast_output(values, "int8", np.uint8)
