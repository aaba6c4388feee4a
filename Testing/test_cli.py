"""The ``medsr`` command as a user runs it: results on disk, and one clear line plus exit 2 for bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from MedSRLib.io.volume import Volume
from MedSRLib.io.volume_files import read_volume, write_volume

OBLIQUE = (0.8, -0.6, 0.0, 0.36, 0.48, -0.8, 0.48, 0.64, 0.6)


def medsr(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "MedSRLib.apps.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def assert_user_error(completed, fragment):
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medsr: error: "), completed.stderr
    assert fragment in lines[0]


@pytest.fixture
def scan(tmp_path):
    rng = np.random.default_rng(3)
    array = (rng.random((6, 12, 10)) * 500).astype(np.int16)
    path = tmp_path / "scan.nrrd"
    write_volume(Volume(array, (0.9, 0.9, 3.0), (10, -20, 5), OBLIQUE), path)
    return path


def test_super_resolve_writes_the_corner_aligned_result(scan, tmp_path):
    out = tmp_path / "out.nii.gz"
    completed = medsr("super-resolve", scan, out, "--method", "bspline", "--scale", "1,1,3", "--quiet")
    assert completed.returncode == 0, completed.stderr
    result = read_volume(out)
    assert result.size == (10, 12, 18)
    np.testing.assert_allclose(result.spacing, (0.9, 0.9, 1.0), atol=1e-5)
    expected_origin = np.array([10, -20, 5]) + np.reshape(OBLIQUE, (3, 3)) @ np.array([0, 0, -1.0])
    np.testing.assert_allclose(result.origin, expected_origin, atol=1e-4)
    np.testing.assert_allclose(result.direction, OBLIQUE, atol=1e-5)
    # Output slice 3m + 1 lies on input slice m, where the interpolating B-spline takes the input's values.
    assert result.array.dtype == np.float32
    np.testing.assert_allclose(result.array[1::3], read_volume(scan).array, atol=1e-2)


def test_progress_lines_for_the_slicer_module(scan, tmp_path):
    completed = medsr("super-resolve", scan, tmp_path / "out.nrrd", "--progress-lines")
    from MedSRLib.apps.process import parse_progress_line
    progress = [parse_progress_line(line) for line in completed.stdout.splitlines()]
    assert completed.returncode == 0 and progress and progress[-1] == (1, 1)


def test_input_file_is_not_modified(scan, tmp_path):
    before = scan.read_bytes()
    medsr("super-resolve", scan, tmp_path / "out.nrrd", "--scale", "2", "--quiet")
    assert scan.read_bytes() == before


@pytest.mark.parametrize("arguments, fragment", [
    (["--method", "magic"], "Unknown method"),
    (["--scale", "1"], "above 1"),
    (["--scale", "1,1,20"], "above 16 (the limit is 16 when only one axis is scaled, 8 otherwise)"),
    (["--scale", "9,9,1"], "above 8"),
    (["--scale", "2", "--target-spacing", "1"], "Give --scale … or --target-spacing …, not both."),
    (["--memory-budget", "0.00001"], "budget"),
])
def test_bad_options_give_one_line_and_no_output(scan, tmp_path, arguments, fragment):
    out = tmp_path / "out.nrrd"
    assert_user_error(medsr("super-resolve", scan, out, *arguments), fragment)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nrrd"]


def test_missing_input(tmp_path):
    assert_user_error(medsr("super-resolve", tmp_path / "nope.nrrd", tmp_path / "out.nrrd"), "does not exist")


def test_corrupt_input(tmp_path):
    (tmp_path / "bad.nrrd").write_text("NRRD0004\ngarbage\n")
    assert_user_error(medsr("super-resolve", tmp_path / "bad.nrrd", tmp_path / "out.nrrd"), "Could not read")
    assert not (tmp_path / "out.nrrd").exists()


def test_2d_input(tmp_path):
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkUInt8), str(tmp_path / "flat.nrrd"))
    assert_user_error(medsr("super-resolve", tmp_path / "flat.nrrd", tmp_path / "out.nrrd"), "2D")


def test_nan_input(tmp_path):
    array = np.random.default_rng(0).random((5, 5, 5)).astype(np.float32)
    array[2, 2, 2] = np.nan
    write_volume(Volume(array, (1, 1, 1)), tmp_path / "nan.nrrd")
    assert_user_error(medsr("super-resolve", tmp_path / "nan.nrrd", tmp_path / "out.nrrd"), "NaN")


def test_constant_input(tmp_path):
    write_volume(Volume(np.ones((5, 5, 5), np.float32), (1, 1, 1)), tmp_path / "flat.nrrd")
    assert_user_error(medsr("super-resolve", tmp_path / "flat.nrrd", tmp_path / "out.nrrd"), "constant")


def test_label_map_input_warns_but_runs(tmp_path):
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:4, 1:4, 1:4] = 2
    write_volume(Volume(labels, (1, 1, 1)), tmp_path / "labels.nrrd")
    completed = medsr("super-resolve", tmp_path / "labels.nrrd", tmp_path / "out.nrrd", "--quiet")
    assert completed.returncode == 0 and "label map" in completed.stderr


def test_output_folder_missing(scan, tmp_path):
    assert_user_error(medsr("super-resolve", scan, tmp_path / "missing" / "out.nrrd"), "does not exist")


def test_output_over_input_is_refused(scan):
    before = scan.read_bytes()
    assert_user_error(medsr("super-resolve", scan, scan), "never overwrites")
    assert scan.read_bytes() == before


def test_degrade_then_evaluate(tmp_path):
    rng = np.random.default_rng(0)
    array = np.cumsum(rng.random((8, 8, 8)), axis=0).astype(np.float32)
    write_volume(Volume(array, (1, 1, 1), (1, 2, 3)), tmp_path / "hr.nrrd")
    assert medsr("degrade", tmp_path / "hr.nrrd", tmp_path / "lr.nrrd", "--factor", "2").returncode == 0
    low = read_volume(tmp_path / "lr.nrrd")
    assert low.size == (4, 4, 4)
    np.testing.assert_allclose(low.spacing, (2, 2, 2))
    np.testing.assert_allclose(low.origin, (1.5, 2.5, 3.5))
    np.testing.assert_allclose(low.array[0, 0, 0], array[:2, :2, :2].mean(), rtol=1e-6)

    thick = medsr("degrade", tmp_path / "hr.nrrd", tmp_path / "thick.nrrd", "--operator", "thick-slices",
                  "--factor", "4", "--axis", "z")
    assert thick.returncode == 0, thick.stderr
    assert read_volume(tmp_path / "thick.nrrd").size == (8, 8, 2)

    assert medsr("super-resolve", tmp_path / "lr.nrrd", tmp_path / "sr.nrrd", "--quiet").returncode == 0
    completed = medsr("evaluate", tmp_path / "sr.nrrd", tmp_path / "hr.nrrd")
    assert completed.returncode == 0, completed.stderr
    metrics = json.loads(completed.stdout)
    assert 10 < metrics["psnr"] < 60 and 0 < metrics["ssim"] <= 1


def test_evaluate_prints_the_protocol_metrics_computed_by_hand(tmp_path):
    reference = np.zeros((8, 8, 8), np.float32)
    reference[4:] = 100.0  # percentiles 0.5 / 99.5 are 0 and 100: normalised, the two halves are 0 and 1
    result = reference.copy()
    result[4:] = 90.0  # an error of 0.1 on the bright half only
    write_volume(Volume(reference, (1, 1, 1)), tmp_path / "reference.nrrd")
    write_volume(Volume(result, (1, 1, 1)), tmp_path / "result.nrrd")
    completed = medsr("evaluate", tmp_path / "result.nrrd", tmp_path / "reference.nrrd")
    assert completed.returncode == 0, completed.stderr
    metrics = json.loads(completed.stdout)
    # MSE 0.01 over half the voxels = 0.005: 10·log10(1 / 0.005) = 23.01 dB; the foreground is the bright half, MSE
    # 0.01: 20 dB; NRMSE √(0.005) / √(0.5) = 0.1.
    assert metrics["psnr"] == pytest.approx(10 * np.log10(200), abs=1e-3)
    assert metrics["psnr_foreground"] == pytest.approx(20, abs=1e-3)
    assert metrics["nrmse"] == pytest.approx(0.1, abs=1e-5)
    assert 0 < metrics["ssim"] < 1


def test_methods_and_info(scan):
    listing = json.loads(medsr("methods", "--json").stdout)
    assert {"nearest", "linear", "bspline", "lanczos"} <= {m["name"] for m in listing["methods"]}
    info = medsr("info", scan)
    assert info.returncode == 0 and "thick axis" in info.stdout and "z, factor 3.3333" in info.stdout


@pytest.mark.parametrize("oblique", [False, True], ids=["as-shipped", "oblique"])
def test_bspline_x2_on_colin27(colin27_path, tmp_path, oblique):
    """The acceptance case: half spacing, doubled size, corner-aligned origin, unchanged direction."""
    source = read_volume(colin27_path)
    if oblique:
        source.direction = OBLIQUE
        source.origin = (12.5, -30.25, 7.0)
        colin27_path = tmp_path / "colin27_oblique.nrrd"
        write_volume(source, colin27_path)
    out = tmp_path / "colin27_x2.nii"
    completed = medsr("super-resolve", colin27_path, out, "--method", "bspline", "--scale", "2", "--quiet")
    assert completed.returncode == 0, completed.stderr
    result = read_volume(out)
    assert result.size == tuple(2 * n for n in source.size) == (362, 434, 362)
    np.testing.assert_allclose(result.spacing, np.array(source.spacing) / 2, atol=1e-6)
    matrix = np.reshape(source.direction, (3, 3))
    expected_origin = np.array(source.origin) + matrix @ (-np.array(source.spacing) / 4)
    np.testing.assert_allclose(result.origin, expected_origin, atol=1e-4)
    np.testing.assert_allclose(result.direction, source.direction, atol=1e-6)


def test_per_scan_method_detects_the_thick_axis_when_no_scale_is_given(tmp_path):
    rng = np.random.default_rng(5)
    array = (rng.random((9, 24, 20)) * 300).astype(np.int16)
    write_volume(Volume(array, (1.0, 1.0, 4.0), (0, 0, 0), OBLIQUE), tmp_path / "thick.nrrd")
    completed = medsr("super-resolve", tmp_path / "thick.nrrd", tmp_path / "iso.nrrd", "--method", "smore",
                      "--iterations", "2", "--quiet")
    assert completed.returncode == 0, completed.stderr
    result = read_volume(tmp_path / "iso.nrrd")
    assert result.size == (20, 24, 36)
    np.testing.assert_allclose(result.spacing, (1, 1, 1), atol=1e-6)


def test_per_scan_option_for_an_interpolation_method(scan, tmp_path):
    out = tmp_path / "out.nrrd"
    assert_user_error(medsr("super-resolve", scan, out, "--method", "bspline", "--iterations", "3"), "has no option")
    assert not out.exists()


def test_a_folder_without_dicom_gets_only_medsrs_sentence(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    assert_user_error(medsr("info", folder), "contains no DICOM series")  # and no ITK warning before it


def test_output_piped_into_a_reader_that_stops_early_is_not_an_error():
    child = subprocess.Popen([sys.executable, "-m", "MedSRLib.apps.cli", "methods", "--json"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    child.stdout.close()  # like `| head` exiting before medsr writes
    _, errors = child.communicate(timeout=120)
    assert child.returncode == 0 and b"Traceback" not in errors and b"BrokenPipe" not in errors


def test_info_prints_no_negative_zero_in_the_direction(colin27_path):
    # Colin27's NIfTI header gives SimpleITK a direction of -1, -0, -0, -0, -1, -0, 0, 0, 1.
    completed = medsr("info", colin27_path)
    line = next(line for line in completed.stdout.splitlines() if line.startswith("direction"))
    assert line.split()[1:] == ["-1", "0", "0", "0", "-1", "0", "0", "0", "1"]


# --- method options, generated from the methods' declarations -------------------------------------------------------

def medsr_in_process(capsys, *args):
    """medsr run in this process (no interpreter start), for commands that end before any real work."""
    from MedSRLib.apps.cli import main
    returncode = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, returncode, captured.out, captured.err)


def super_resolve_arguments():
    """dest → argparse action of ``medsr super-resolve``."""
    import argparse
    from MedSRLib.apps.cli import build_parser
    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    return {action.dest: action for action in commands.choices["super-resolve"]._actions}


def test_every_declared_method_option_has_a_flag_whose_help_names_its_methods():
    from MedSRLib.methods.base import registered_methods
    arguments = super_resolve_arguments()
    declared = [(method, option) for method in registered_methods() for option in method.options]
    assert {option.name for _, option in declared} >= {"budget_seconds", "iterations", "profile", "gap", "features"}
    for method, option in declared:
        assert option.cli_flag in arguments[option.name].option_strings
        assert method.name in arguments[option.name].help
    assert arguments["profile"].help.endswith("(smore; default: gaussian)")
    assert arguments["both_orientations"].help.endswith(
        "(clade, smore, transmrsr; default: clade no, smore yes, transmrsr yes)")


def test_the_per_scan_flags_keep_their_spellings():
    from MedSRLib.apps.cli import build_parser, run_options
    args = build_parser().parse_args([
        "super-resolve", "in.nrrd", "out.nrrd", "--method", "smore", "--budget-seconds", "60", "--iterations", "2",
        "--save-model", "m.safetensors", "--slice-profile", "gaussian", "--slice-gap", "0.5", "--force-scale",
        "--no-both-orientations"])
    assert run_options(args) == {
        "blend": "gaussian", "batch_size": 4, "backend": "auto", "output_dtype": "float32", "budget_seconds": 60.0,
        "iterations": 2, "save_model": "m.safetensors", "force_scale": True, "both_orientations": False,
        "profile": "gaussian", "gap": 0.5}


@pytest.mark.parametrize("arguments, message", [
    (["--method", "bspline", "--slice-gap", "1"], "Method 'bspline' has no option '--slice-gap' (its options: none)."),
    (["--method", "smore", "--features", "8"], "Method 'smore' has no option '--features' (its options: "
                                                 "'--budget-seconds', '--iterations', '--save-model'"),
    (["--method", "smore", "--slice-profile", "triangle"],
     "The option '--slice-profile' must be one of box, gaussian, not 'triangle'."),
    (["--method", "clade", "--features", "2"], "The option '--features' must be an integer of at least 4, not 2."),
])
def test_a_method_option_the_method_refuses_is_one_sentence_naming_the_flag(capsys, scan, tmp_path, arguments,
                                                                           message):
    out = tmp_path / "out.nrrd"
    assert_user_error(medsr_in_process(capsys, "super-resolve", scan, out, *arguments), message)
    assert not out.exists()


def test_methods_json_lists_each_methods_declared_options(capsys):
    listing = json.loads(medsr_in_process(capsys, "methods", "--json").stdout)
    methods = {method["name"]: method for method in listing["methods"]}
    assert methods["bspline"]["options"] == []
    smore_options = {option["name"]: option for option in methods["smore"]["options"]}
    assert smore_options["profile"] == {
        "name": "profile", "kind": "choice", "default": "gaussian", "choices": ["box", "gaussian"], "minimum": None,
        "maximum": None, "unit": "", "flag": "--slice-profile", "label": "Slice profile",
        "help": "the shape of the through-plane slice profile the training pairs are degraded with; its width (FWHM) "
                "is estimated from the scan unless a slice gap is given"}
    assert (smore_options["iterations"]["kind"], smore_options["iterations"]["minimum"]) == ("int", 1)
    assert {option["name"] for option in methods["clade"]["options"]} >= {"gradient_weight", "features"}
