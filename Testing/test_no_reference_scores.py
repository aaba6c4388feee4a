"""A protocol row's no-reference scores (protocol.no_reference_scores): which slices PIQE sees, which borders edge
sharpness is measured at, and the table ``python -m MedSRLib.evaluation --no-reference`` prints."""
import numpy as np
import pytest
from scipy import ndimage

from MedSRLib.evaluation.metrics import find_edge_points
from MedSRLib.evaluation.protocol import (Degradation, no_reference_scores, no_reference_table, reference_borders,
                                         reference_table)

SHAPE = (40, 48, 56)  # three lengths, so a slice's shape tells which axes it contains


def blurred_ball(shape=SHAPE, sigma=(1.0, 1.0, 1.0)) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float32)
    centre = np.array([(n - 1) / 2 for n in shape], dtype=np.float32)[:, None, None, None]
    ball = (np.sqrt(((grid - centre) ** 2).sum(axis=0)) < 0.35 * min(shape)).astype(np.float32)
    return ndimage.gaussian_filter(ball, sigma)


@pytest.fixture()
def scored_planes(monkeypatch):
    """The 2D planes handed to pypiqe, instead of scoring them."""
    pypiqe = pytest.importorskip("pypiqe")
    planes = []

    def record(plane):
        planes.append(plane)
        return 50.0, None, None, None
    monkeypatch.setattr(pypiqe, "piqe", record)
    return planes


@pytest.mark.parametrize("thick_axis, slice_axis", [(0, 1), (1, 0), (2, 0)])
def test_piqe_of_a_thick_row_scores_every_fourth_through_plane_slice(scored_planes, thick_axis, slice_axis):
    row = Degradation("thick", 4, thick_axis)
    texture = np.random.default_rng(0).uniform(0.5, 1.0, SHAPE).astype(np.float32)  # every slice is its own pattern
    scores = no_reference_scores(texture, row, reference_borders(texture, row))
    assert scores["piqe"] == 50.0
    slices = [texture.take(index, slice_axis).ravel() for index in range(SHAPE[slice_axis])]
    scored = [int(np.argmax([np.corrcoef(plane.ravel(), original)[0, 1] for original in slices]))
              for plane in scored_planes]
    assert scored == list(range(0, SHAPE[slice_axis], 4))
    assert all(SHAPE[thick_axis] in plane.shape for plane in scored_planes)  # each slice runs through the thick axis


def test_in_plane_and_isotropic_rows_score_the_degraded_slices(scored_planes):
    volume = blurred_ball()
    for key, slice_shape in (("inplane-2-axis2", (40, 48)), ("isotropic-2", (48, 56))):
        row = Degradation.from_key(key)
        scored_planes.clear()
        no_reference_scores(volume, row, reference_borders(volume, row))
        assert {plane.shape for plane in scored_planes} == {slice_shape}


def test_edge_sharpness_of_a_thick_row_is_measured_across_the_thick_axis_at_the_references_borders():
    reference = blurred_ball()
    through_plane_blur = blurred_ball(sigma=(3.0, 1.0, 1.0))
    in_plane_blur = blurred_ball(sigma=(1.0, 3.0, 3.0))
    row = Degradation("thick", 4, 0)
    borders = reference_borders(reference, row)
    assert len(borders) > 0
    np.testing.assert_array_equal(borders, find_edge_points(reference, (1, 1, 1), axis=0))

    def sharpness(volume):
        return no_reference_scores(volume, row, borders)["edge_sharpness"]
    assert sharpness(through_plane_blur) < 0.7 * sharpness(reference)
    assert sharpness(in_plane_blur) > sharpness(through_plane_blur)


def test_the_reference_table_scores_every_method_of_a_row_at_the_same_borders(monkeypatch):
    pytest.importorskip("pypiqe")
    from MedSRLib.evaluation import protocol
    found = []

    def find_once(hr, degradation, spacing_xyz=(1.0, 1.0, 1.0)):
        found.append(degradation.key)
        return reference_borders(hr, degradation, spacing_xyz)
    monkeypatch.setattr(protocol, "reference_borders", find_once)
    volume = 200 * blurred_ball((48, 48, 48))
    results = reference_table(["nearest", "bspline"], [Degradation.from_key("thick-4")], volume, no_reference=True)
    assert found == ["thick-4"]
    row = results["thick slices ×4 (first array axis)"]
    assert row["nearest"]["edge_sharpness"] > row["bspline"]["edge_sharpness"] > 0  # nearest's steps are steepest
    assert all(0 <= scores["piqe"] <= 100 for scores in row.values())
    table = no_reference_table(results).splitlines()
    assert table[0] == ("| degradation | nearest PIQE / edge sharpness (mm⁻¹) | bspline PIQE / edge sharpness "
                        "(mm⁻¹) |")
    assert table[2].startswith("| thick slices ×4 (first array axis) | ")


def test_the_evaluation_command_prints_the_no_reference_table_only_when_asked(monkeypatch, capsys):
    pytest.importorskip("pypiqe")
    from MedSRLib.evaluation import protocol
    monkeypatch.setattr(protocol, "heldout_volume", lambda name: 200 * blurred_ball((48, 48, 48)))
    arguments = ["--rows", "thick-4", "--methods", "linear", "bspline"]
    protocol.main(arguments)
    plain = capsys.readouterr().out.splitlines()
    assert plain[0] == "colin27:" and plain[1].startswith("| degradation | linear PSNR") and len(plain) == 4
    protocol.main([*arguments, "--no-reference"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == plain and lines[4] == ""  # the protocol's table as without the option, then the second one
    assert lines[5:7] == ["colin27, no-reference scores (PIQE lower is better, edge sharpness higher is sharper):",
                          "| degradation | linear PIQE / edge sharpness (mm⁻¹) | bspline PIQE / edge sharpness (mm⁻¹) |"]
    assert lines[8].startswith("| thick slices ×4 (first array axis) | ") and len(lines) == 9
