"""Output grid, scale parsing and thick-axis detection against hand-computed values."""
import numpy as np
import pytest

from MedSRLib.errors import InputError
from MedSRLib.grid.geometry import array_factors, detect_thick_axis, output_grid, output_shape, parse_scale

# A rotation of 30° about z followed by 20° about x: every column mixes axes.
_c, _s = np.cos(np.radians(30)), np.sin(np.radians(30))
_cx, _sx = np.cos(np.radians(20)), np.sin(np.radians(20))
OBLIQUE = (np.array([[1, 0, 0], [0, _cx, -_sx], [0, _sx, _cx]]) @ np.array([[_c, -_s, 0], [_s, _c, 0], [0, 0, 1]]))


def test_isotropic_x2_halves_spacing_and_moves_origin_by_a_quarter_voxel():
    grid = output_grid((10, 20, 30), (1.0, 1.0, 1.0), (5.0, 6.0, 7.0), np.eye(3).ravel(), (2, 2, 2))
    assert grid.size == (20, 40, 60)
    assert grid.shape == (60, 40, 20)
    assert grid.spacing == (0.5, 0.5, 0.5)
    # The first input voxel spans [4.5, 5.5]; the first output voxel spans [4.5, 5.0], centre 4.75.
    np.testing.assert_allclose(grid.origin, (4.75, 5.75, 6.75))


def test_oblique_direction_moves_origin_along_the_rotated_axes():
    spacing, origin, scale = (0.8, 1.2, 3.0), (10.0, -20.0, 5.0), (2.0, 1.0, 3.0)
    grid = output_grid((64, 50, 20), spacing, origin, OBLIQUE.ravel(), scale)
    new_spacing = np.array([0.4, 1.2, 1.0])
    # Hand computation: the half-voxel shift in index space, (s' - s) / 2 = (-0.2, 0, -1.0) mm, rotated by D.
    shift = np.array([-0.2, 0.0, -1.0])
    np.testing.assert_allclose(grid.spacing, new_spacing)
    np.testing.assert_allclose(grid.origin, np.array(origin) + OBLIQUE @ shift)
    np.testing.assert_allclose(np.reshape(grid.direction, (3, 3)), OBLIQUE)
    assert grid.size == (128, 50, 60)


def test_outer_corner_of_the_volume_is_preserved():
    spacing, origin, size, scale = (0.9, 1.1, 2.5), (3.0, 4.0, -2.0), (11, 13, 7), (2.0, 2.0, 5.0)
    grid = output_grid(size, spacing, origin, OBLIQUE.ravel(), scale)
    corner_in = np.array(origin) - OBLIQUE @ (np.array(spacing) / 2)
    corner_out = np.array(grid.origin) - OBLIQUE @ (np.array(grid.spacing) / 2)
    np.testing.assert_allclose(corner_out, corner_in)
    far_in = np.array(origin) + OBLIQUE @ (np.array(spacing) * (np.array(size) - 0.5))
    far_out = np.array(grid.origin) + OBLIQUE @ (np.array(grid.spacing) * (np.array(grid.size) - 0.5))
    np.testing.assert_allclose(far_out, far_in)


def test_non_integer_scale_rounds_the_size_and_keeps_spacing_over_factor():
    grid = output_grid((45, 10, 10), (4.0, 1.0, 1.0), (0, 0, 0), np.eye(3).ravel(), (2.5, 1.0, 1.0))
    assert grid.size == (112, 10, 10)   # round(112.5) with banker's rounding is 112
    assert grid.spacing[0] == pytest.approx(1.6)
    assert output_shape((10, 10, 45), (2.5, 1.0, 1.0)) == (10, 10, 112)


@pytest.mark.parametrize("text, expected", [("2", (2, 2, 2)), ("1,1,3", (1, 1, 3)), (2.5, (2.5,) * 3),
                                            ((1, 2, 1), (1, 2, 1))])
def test_parse_scale(text, expected):
    assert parse_scale(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad, message", [
    ("1", r"Scale \(1.0, 1.0, 1.0\) must be at least 1 on every axis and above 1 on one"),
    ("0.5", r"Scale \(0.5, 0.5, 0.5\) must be at least 1"),
    ("1,1,1", r"Scale \(1.0, 1.0, 1.0\) must be at least 1"),
    ("2,2", "must be one number or three"),
    ("nine", "is not a number or a comma-separated triple"),
    ("9", "Scale 9 is above 8"),
    ("1,1,16.5", "Scale 16.5 is above 16"),
    ("1,1,-3", r"Scale \(1.0, 1.0, -3.0\) must be at least 1"),
    ("nan", r"Scale \(nan, nan, nan\) must be at least 1"),
])
def test_parse_scale_refuses_bad_scales(bad, message):
    with pytest.raises(InputError, match=message):
        parse_scale(bad)


def test_array_factors_reverse_physical_order():
    assert array_factors((1, 2, 3)) == (3, 2, 1)


def test_thick_axis_detection():
    thick = detect_thick_axis((0.8, 0.8, 5.0))
    assert thick.axis == 2 and thick.array_axis == 0 and thick.factor == pytest.approx(6.25)
    assert thick.scale() == (1.0, 1.0, 6.25)
    assert detect_thick_axis((2.0, 3.0, 2.0)).axis == 1
    assert detect_thick_axis((1.0, 1.05, 1.1)) is None
