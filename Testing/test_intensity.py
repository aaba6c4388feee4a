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
    floats = cast_output(values, "float32", np.uint8)
    assert floats.dtype == np.float32
    np.testing.assert_array_equal(floats, values)
    # Rounded to the nearest integer, halves to even (0.5 → 0, 1.5 → 2), then clamped to 0 … 255.
    rounded = cast_output(values, "input", np.uint8)
    assert rounded.dtype == np.uint8 and rounded.tolist() == [0, 0, 2, 255, 255]
    assert cast_output(values, "input", np.int16).tolist() == [-3, 0, 2, 255, 300]
    with pytest.raises(InputError, match="'int8' is not supported"):
        cast_output(values, "int8", np.uint8)


def test_output_dtype_input_saturates_at_the_int16_limits():
    values = np.array([-40000.0, -32768.6, -32767.5, -32767.4, 32766.5, 32767.4, 32767.6, 40000.0], np.float32)
    # Rounded: −40000, −32769, −32768, −32767, 32766, 32767, 32768, 40000; then clamped to −32768 … 32767.
    result = cast_output(values, "input", np.int16)
    assert result.dtype == np.int16
    assert result.tolist() == [-32768, -32768, -32768, -32767, 32766, 32767, 32767, 32767]


def test_output_dtype_input_keeps_a_float_input_type_without_rounding():
    values = np.array([-3.4, 0.5, 1e6], np.float32)
    result = cast_output(values, "input", np.float64)
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, values.astype(np.float64))


@pytest.mark.filterwarnings("error:overflow encountered in cast")
def test_output_dtype_input_clamps_to_the_float16_range():
    result = cast_output(np.array([70000.0, -1e6, 1.0], np.float32), "input", np.float16)
    assert result.dtype == np.float16
    assert result.tolist() == [65504.0, -65504.0, 1.0]
