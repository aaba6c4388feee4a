"""``medsr demo``'s pieces on small synthetic volumes: the axial view's orientation letters, the inset's choice, the
panels and their scores (equal to the evaluation protocol's), the picture, and what the command prints without a
terminal. The real demo (Colin27 and the shipped model, minutes on a CPU) is the README's first command."""
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from MedSRLib.apps import cli, demo
from MedSRLib.evaluation.protocol import evaluate_method
from MedSRLib.io.volume import Volume

IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)
COLIN27 = (-1, 0, 0, 0, -1, 0, 0, 0, 1)  # Colin27's NIfTI header as LPS: index x runs to the right, y to the front
# Array axes in another order: index x runs to the left, index y to the top (superior), index z to the back.
PERMUTED = (1, 0, 0, 0, 0, 1, 0, 1, 0)
# Turned 20° about the inferior–superior axis.
OBLIQUE = (np.cos(0.35), -np.sin(0.35), 0, np.sin(0.35), np.cos(0.35), 0, 0, 0, 1)
RADIOLOGICAL = {"top": "A", "bottom": "P", "left": "R", "right": "L"}


def physical_coordinates(shape, direction):
    """The LPS position (x, y, z) of every voxel of a (k, j, i) array with unit spacing at the origin."""
    k, j, i = np.indices(shape, dtype=float)
    return np.einsum("rc,c...->r...", np.reshape(direction, (3, 3)), np.stack([i, j, k]))


@pytest.mark.parametrize("direction", [IDENTITY, COLIN27, PERMUTED, OBLIQUE],
                         ids=["identity", "colin27", "permuted", "oblique"])
def test_the_axial_view_shows_the_patient_as_its_letters_say(direction):
    x, y, z = physical_coordinates((8, 10, 12), direction)
    view = demo.axial_view(direction)
    assert view.edges == RADIOLOGICAL
    # Left to right runs from the patient's right to left (LPS x grows), top to bottom from anterior to posterior
    # (LPS y grows), and the slice lies across the inferior–superior axis (one z).
    assert (np.diff(view.image(x, 3), axis=1) > 0).all()
    assert (np.diff(view.image(y, 3), axis=0) > 0).all()
    np.testing.assert_allclose(view.image(z, 3), 3.0)


def test_patient_side_letters():
    assert [demo.patient_side(v) for v in np.eye(3)] == ["L", "P", "S"]
    assert [demo.patient_side(-v) for v in np.eye(3)] == ["R", "A", "I"]


def head_with_details(size=120):
    """A bright-rimmed disc ('scalp') holding a large dark blob of strong contrast ('ventricle') and a small patch of
    fine, faint stripes ('gyri')."""
    rows, columns = np.indices((size, size))
    radius = np.hypot(rows - size / 2, columns - size / 2)
    image = np.where(radius < size * 0.45, 0.6, 0.0)
    image[(radius > size * 0.40) & (radius < size * 0.45)] = 1.0
    image[np.hypot(rows - 60, columns - 45) < 12] = 0.1
    stripes = (slice(64, 84), slice(66, 86))
    image[stripes] += 0.12 * (columns[stripes] // 2 % 2)
    return ndimage.gaussian_filter(image, 0.7), stripes


def test_the_inset_is_the_fine_detail_not_the_strongest_edges():
    image, stripes = head_with_details()
    top, left = demo.detail_window(image, 20, margin=8)
    assert abs(top - stripes[0].start) <= 3 and abs(left - stripes[1].start) <= 3
    # Gradient energy alone would pick the rim or the blob.
    energy = demo.window_sums(sum(g ** 2 for g in np.gradient(image)), 20)
    strongest = np.unravel_index(np.argmax(energy), energy.shape)
    assert abs(strongest[0] - top) > 10 or abs(strongest[1] - left) > 10


def test_window_sums_are_sums_over_each_window():
    field = np.random.default_rng(0).random((9, 7))
    sums = demo.window_sums(field, 3)
    assert sums.shape == (7, 5)
    np.testing.assert_allclose(sums[4, 2], field[4:7, 2:5].sum())


@pytest.fixture(scope="module")
def synthetic_demo(tmp_path_factory):
    """The demo with linear interpolation as 'the method', on a smooth synthetic head with Colin27's direction."""
    rng = np.random.default_rng(1)
    array = ndimage.gaussian_filter(rng.random((40, 50, 44)), 2.0) * 1000
    reference = Volume(array.astype(np.float32), (1.0, 1.0, 1.0), (90.0, 125.0, -71.0), COLIN27)
    output_dir = tmp_path_factory.mktemp("demo")
    lines = []
    result = demo.compare_methods(reference, "Synthetic", output_dir, "linear", log=lines.append, inset_voxels=12)
    return reference, output_dir, result, lines


def test_the_panels_are_input_bspline_method_and_reference(synthetic_demo):
    _, _, result, _ = synthetic_demo
    assert [panel.title for panel in result.panels] == ["2 mm input (nearest neighbour)", "cubic B-spline", "linear",
                                                       "1 mm reference"]
    psnr, ssim = result.panels[1].scores["psnr"], result.panels[1].scores["ssim"]
    assert result.panels[1].caption == [f"PSNR vs 1 mm reference: {psnr:.2f} dB",
                                        f"SSIM vs 1 mm reference: {ssim:.4f}"]
    assert result.panels[3].scores is None
    assert result.view.edges == RADIOLOGICAL


def test_the_scores_are_the_evaluation_protocols(synthetic_demo):
    reference, _, result, _ = synthetic_demo
    for panel, method in zip(result.panels[1:3], ("bspline", "linear")):
        expected = evaluate_method(method, reference.array, "isotropic", 2)
        assert panel.scores["psnr"] == pytest.approx(expected["psnr"], abs=1e-9)
        assert panel.scores["ssim"] == pytest.approx(expected["ssim"], abs=1e-9)


def test_the_picture_and_the_volumes_are_written(synthetic_demo):
    _, output_dir, result, lines = synthetic_demo
    assert sorted(path.name for path in output_dir.glob("*.nrrd")) == [
        "synthetic_1mm_reference.nrrd", "synthetic_2mm.nrrd", "synthetic_2mm_x2_bspline.nrrd",
        "synthetic_2mm_x2_linear.nrrd"]
    with Image.open(result.picture) as picture:
        # Four columns of the 44 × 50 axial slice at 3 pixels per voxel, with gaps.
        assert picture.width == 4 * (44 * demo.SLICE_ZOOM + demo.GAP) + demo.GAP
        # The slice and, below it, the 12-voxel inset at the column's width.
        assert picture.height > 50 * demo.SLICE_ZOOM + 44 * demo.SLICE_ZOOM
    assert len(lines) == 3 and "linear" in lines[0] and "B-spline" in lines[1]


def test_format_scores_lists_the_scored_panels(synthetic_demo):
    _, _, result, _ = synthetic_demo
    table = demo.format_scores(result.panels).splitlines()
    assert table[0] == "against the 1 mm reference (whole volume, evaluation protocol):"
    assert table[1].split() == ["PSNR", "(dB)", "foreground", "PSNR", "(dB)", "SSIM"]
    bspline = result.panels[1].scores
    assert table[3].split() == ["cubic", "B-spline", f"{bspline['psnr']:.2f}", f"{bspline['psnr_foreground']:.2f}",
                                f"{bspline['ssim']:.4f}"]
    assert len(table) == 5  # the reference is not scored against itself


@pytest.fixture
def fake_demo(synthetic_demo, monkeypatch):
    """``medsr demo`` with the synthetic result in place of Colin27's, reporting progress and stages as the real one."""
    def run_demo(output_dir, method, checkpoint, progress=None, log=None):
        log("super-resolving")
        if progress is not None:
            for done in range(3):
                progress(done, 2)
        return synthetic_demo[2]
    monkeypatch.setattr(demo, "run_demo", run_demo)
    monkeypatch.delenv("MEDSR_PROGRESS", raising=False)
    return synthetic_demo[2]


def test_the_demo_names_the_full_model_since_a_cpu_would_default_to_the_fast_variant(synthetic_demo, monkeypatch):
    asked = []

    def run_demo(output_dir, method, checkpoint, progress=None, log=None):
        asked.append((method, checkpoint))
        return synthetic_demo[2]
    monkeypatch.setattr(demo, "run_demo", run_demo)
    assert cli.main(["demo", "unused", "--quiet"]) == 0
    assert cli.main(["demo", "unused", "--quiet", "--method", "lanczos"]) == 0
    assert asked == [("threeplayer", "threeplayer-x2"), ("lanczos", None)]


def test_without_a_terminal_the_demo_prints_progress_lines_stages_and_scores(fake_demo, capsys):
    assert cli.main(["demo", "unused"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[:3] == ["MEDSR-PROGRESS 0/2", "MEDSR-PROGRESS 1/2", "MEDSR-PROGRESS 2/2"]
    assert out.splitlines()[3:] == demo.format_scores(fake_demo.panels).splitlines()
    assert err.splitlines() == ["medsr demo: super-resolving", f"wrote the volumes and {fake_demo.picture}"]


def test_quiet_demo_prints_only_its_scores(fake_demo, capsys):
    assert cli.main(["demo", "unused", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == demo.format_scores(fake_demo.panels).splitlines()
    assert err.splitlines() == [f"wrote the volumes and {fake_demo.picture}"]
