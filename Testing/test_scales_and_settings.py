"""Which scales a model serves and the inference settings a checkpoint carries."""
import pytest

from MedSRLib.errors import CheckpointError, InputError
from MedSRLib.models.inference_settings import InferenceSettings
from MedSRLib.models.scales import ScaleSupport, moved_to_slice_axis, unit_axes


def test_listed_scales_match_up_to_rounding_only():
    support = ScaleSupport.from_document({"scales": [[2, 2, 2], [1, 1, 4]]}, "test")
    assert support.contains((2.0, 2.0, 2.0)) and support.contains((1, 1, 4.0000001))
    assert not support.contains((2, 2, 2.5)) and not support.contains((4, 1, 1))
    assert support.default() == (2.0, 2.0, 2.0)
    assert support.describe() == "2×2×2, 1×1×4"


def test_a_scale_range_serves_float_and_per_axis_scales_inside_it_only():
    support = ScaleSupport.from_document({"scale_range": {"min": [1, 1, 1], "max": [4, 4, 1]}}, "test")
    assert support.contains((2.5, 1.3, 1)) and support.contains((4, 4, 1)) and support.contains((1, 1, 1))
    assert not support.contains((4.01, 2, 1)) and not support.contains((2, 2, 2))
    assert support.default() == (4.0, 4.0, 1.0)
    assert support.describe() == "any from 1×1×1 to 4×4×1"
    assert ScaleSupport.from_document(support.to_document(), "round trip") == support


@pytest.mark.parametrize("document", [
    {},
    {"scales": [[2, 2, 2]], "scale_range": {"min": [1, 1, 1], "max": [2, 2, 2]}},
    {"scale_range": {"min": [2, 2, 2], "max": [1, 1, 1]}},
    {"scale_range": {"min": [0.5, 1, 1], "max": [2, 2, 2]}},
    {"scale_range": {"min": [1, 1], "max": [2, 2]}},
    {"scales": []},
])
def test_malformed_scale_documents_are_refused_with_the_place_named(document):
    with pytest.raises(CheckpointError, match="In somewhere"):
        ScaleSupport.from_document(document, "somewhere")


def metadata(**changes):
    base = {"method": "m", "scales": [[2, 2, 2]], "axes": "3d", "patch": [8, 8, 8],
            "normalisation": {"mode": "percentile"}}
    base.update(changes)
    return base


def test_settings_come_from_the_metadata_and_defaults_fill_only_what_it_leaves_out():
    defaults = {"slice_axis": 1, "conditioning": "none", "orientations": 2}
    settings = InferenceSettings.from_metadata(metadata(axes="2d-in-plane", patch=[32, 32], slice_axis=2,
                                                        conditioning="coordinates"), defaults=defaults)
    assert (settings.axes, settings.slice_axis, settings.conditioning, settings.orientations) == \
        ("2d-in-plane", 2, "coordinates", 2)
    assert settings.patch == (32, 32) and settings.inference_patch is None and settings.inference_stride is None


@pytest.mark.parametrize("field, value", [("axes", "4d"), ("slice_axis", 3), ("conditioning", "scale"),
                                          ("orientations", 3), ("inference_stride", [0]),
                                          ("inference_patch", [4, -1]), ("patch", [])])
def test_bad_inference_fields_are_named(field, value):
    with pytest.raises(CheckpointError, match=f"'{field}'"):
        InferenceSettings.from_metadata(metadata(**{field: value}))


def test_for_run_names_the_method_or_the_scales():
    settings = InferenceSettings.from_metadata(metadata(scales=None, scale_range={"min": [1, 1, 1],
                                                                                  "max": [4, 4, 4]}))
    assert settings.for_run("m", (2.5, 2.5, 1)) == settings
    with pytest.raises(CheckpointError, match="trained for method 'm', not 'other'"):
        settings.for_run("other", (2, 2, 2))
    with pytest.raises(CheckpointError, match="supports the scales any from 1×1×1 to 4×4×4, not 5×1×1"):
        settings.for_run("m", (5, 1, 1))


def test_moving_in_plane_factors_to_another_slice_axis_keeps_rows_and_columns():
    # Sagittal slices (along i) have rows k and columns j: (x, y, z) = (1, 2, 4) is rows ×4, columns ×2.
    assert moved_to_slice_axis((1, 2, 4), 2, 0) == (2.0, 4.0, 1.0)  # axial: rows j ×4, columns i ×2
    assert moved_to_slice_axis((1, 2, 4), 2, 1) == (2.0, 1.0, 4.0)  # coronal: rows k ×4, columns i ×2
    assert moved_to_slice_axis((2.5, 3, 1), 0, 0) == (2.5, 3.0, 1.0)
    assert unit_axes((1, 2, 1)) == [0, 2] and unit_axes((2, 2, 2)) == []


def test_an_in_plane_model_takes_its_slices_along_the_axis_the_scale_leaves_at_1():
    # Trained on slices along k (z) with rows j (y) ×4 and columns i (x) ×2.
    settings = InferenceSettings.from_metadata(metadata(axes="2d-in-plane", patch=[16, 16], slice_axis=0,
                                                        scales=[[2, 4, 1]]))
    assert settings.for_run("m", (2, 4, 1)).slice_axis == 0
    # Slices along i (x): rows k (z) ×4, columns j (y) ×2 — the same (rows, columns) factors.
    assert settings.for_run("m", (1, 2, 4)).slice_axis == 2
    # Slices along j (y): rows k (z) ×4, columns i (x) ×2.
    assert settings.for_run("m", (2, 1, 4)).slice_axis == 1
    with pytest.raises(CheckpointError, match=r"in-plane scales 2×4×1 \(their two in-plane factors on any slice "
                                              r"axis\), not 4×1×2"):
        settings.for_run("m", (4, 1, 2))  # rows z ×2, columns x ×4: swapped
    with pytest.raises(InputError, match="super-resolves 2D slices in-plane: give a factor of 1 along the axis the "
                                         "slices are taken along .*not 2×2×2, or the option two_planes .*; for a 3D "
                                         "factor use a 3D method"):
        settings.for_run("m", (2, 2, 2))
    # Several axes at 1: the checkpoint's own slice axis first, else the first that fits.
    square = InferenceSettings.from_metadata(metadata(axes="2d-in-plane", patch=[16, 16], slice_axis=1,
                                                      scale_range={"min": [1, 1, 1], "max": [4, 1, 4]}, scales=None))
    assert square.for_run("m", (1, 1, 3)).slice_axis == 1
    assert square.for_run("m", (3, 1, 1)).slice_axis == 1
