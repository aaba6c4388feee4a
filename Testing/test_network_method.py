"""Learned methods through super_resolve and the CLI: checkpoint checks, tiling, geometry and provenance."""
import json

import numpy as np
import pytest

import MedSRLib
from MedSRLib.apps import cli
from MedSRLib.models.checkpoints import save_checkpoint
from MedSRLib.errors import CheckpointError
from MedSRLib.files import file_sha256
from MedSRLib.methods import MethodKind, register
from MedSRLib.methods.network import NetworkMethod

TINY_RRDB = {"features": 4, "growth": 4, "blocks": 1, "scale": 2}
OBLIQUE = (0.8, -0.6, 0.0, 0.36, 0.48, -0.8, 0.48, 0.64, 0.6)


@register
class TinyPatchMethod(NetworkMethod):
    name = "test-tiny-rrdb"
    kind = MethodKind.PATCH_3D
    description = "test network"
    scales = ((2.0, 2.0, 2.0), (4.0, 4.0, 4.0))
    default_patch = (8, 8, 8)
    default_stride = (6, 6, 6)


def metadata(method="test-tiny-rrdb", scales=((2, 2, 2),)):
    return {"method": method, "architecture": {"name": "rrdb3d", "params": TINY_RRDB}, "scales": [list(s) for s in scales],
            "axes": "3d", "patch": [8, 8, 8], "normalisation": {"mode": "percentile", "percentiles": [0.5, 99.5]},
            "training": {"data": [], "config": {}, "budget": "none (test)", "hardware": "none"}, "metrics": {}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch
    from MedSRLib.nn.registry import build_network
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, build_network("rrdb3d", TINY_RRDB), metadata())
    return path


def volume():
    array = np.random.default_rng(0).random((10, 12, 9)).astype(np.float32) * 100
    return MedSRLib.Volume(array, (1.0, 1.2, 1.5), (3.0, -4.0, 5.0), OBLIQUE)


def test_learned_method_gives_the_corner_aligned_grid_and_provenance(checkpoint):
    result = MedSRLib.super_resolve(volume(), "test-tiny-rrdb", 2, checkpoint=str(checkpoint), device="cpu")
    assert result.array.shape == (20, 24, 18) and np.all(np.isfinite(result.array))
    np.testing.assert_allclose(result.spacing, (0.5, 0.6, 0.75))
    expected_origin = np.array([3.0, -4.0, 5.0]) + np.reshape(OBLIQUE, (3, 3)) @ (-np.array([0.5, 0.6, 0.75]) / 2)
    np.testing.assert_allclose(result.origin, expected_origin)
    assert result.metadata["checkpoint_sha256"] == file_sha256(checkpoint)


def test_result_is_the_network_applied_to_the_normalised_input(checkpoint):
    from MedSRLib.models.checkpoints import load_model
    from MedSRLib.grid.intensity import Normaliser
    from MedSRLib.engine.tiling import TilingOptions, run_tiled
    source = volume()
    result = MedSRLib.super_resolve(source, "test-tiny-rrdb", 2, checkpoint=str(checkpoint), device="cpu",
                                    patch=(8, 8, 8), stride=(6, 6, 6), blend="gaussian")
    model, _ = load_model(checkpoint)
    normaliser = Normaliser.fit(source.array)
    expected = run_tiled(model, normaliser.forward(source.array), (2, 2, 2),
                         TilingOptions(patch=(8, 8, 8), stride=(6, 6, 6), blend="gaussian", device="cpu"))
    np.testing.assert_allclose(result.array, normaliser.inverse(expected), rtol=1e-5, atol=1e-3)


def test_checkpoint_for_another_method_is_refused(tmp_path):
    from MedSRLib.nn.registry import build_network
    path = tmp_path / "other.safetensors"
    save_checkpoint(path, build_network("rrdb3d", TINY_RRDB), metadata(method="threeplayer-other"))
    with pytest.raises(CheckpointError, match="trained for method 'threeplayer-other'"):
        MedSRLib.super_resolve(volume(), "test-tiny-rrdb", 2, checkpoint=str(path))


def test_checkpoint_for_another_scale_is_refused(checkpoint):
    with pytest.raises(CheckpointError, match="scales 2×2×2, not 4×4×4"):
        MedSRLib.super_resolve(volume(), "test-tiny-rrdb", 4, checkpoint=str(checkpoint))


def test_a_scale_the_checkpoint_does_not_serve_is_refused_by_the_checkpoint_not_the_class(checkpoint):
    # The class lists 4×4×4 as a default, but this checkpoint says it serves 2×2×2 only: the checkpoint decides.
    with pytest.raises(CheckpointError, match=r"Checkpoint supports the scales 2×2×2, not 4×4×4\."):
        MedSRLib.super_resolve(volume(), "test-tiny-rrdb", 4, checkpoint=str(checkpoint))


def test_truncated_checkpoint(checkpoint, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(checkpoint.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        MedSRLib.super_resolve(volume(), "test-tiny-rrdb", 2, checkpoint=str(broken))


def test_no_checkpoint_and_none_shipped():
    with pytest.raises(CheckpointError, match="No trained model"):
        MedSRLib.super_resolve(volume(), "test-tiny-rrdb", 2)


def test_cli_reports_a_bad_checkpoint_in_one_line(checkpoint, tmp_path, capsys):
    source = tmp_path / "in.nrrd"
    MedSRLib.write_volume(volume(), source)
    output = tmp_path / "out.nrrd"
    code = cli.main(["super-resolve", str(source), str(output), "--method", "test-tiny-rrdb", "--scale", "4",
                     "--checkpoint", str(checkpoint), "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "not 4×4×4" in error[0]
    assert not output.exists()
    assert cli.main(["super-resolve", str(source), str(output), "--method", "test-tiny-rrdb", "--scale", "2",
                     "--checkpoint", str(checkpoint), "--quiet"]) == 0
    assert MedSRLib.read_volume(output).size == (18, 24, 20)


def test_threeplayer_on_a_cpu_uses_the_shipped_fast_model_by_default_and_beats_interpolation_on_a_smooth_volume(
        tmp_path):
    from scipy import ndimage
    from MedSRLib.grid.degradation import block_mean
    from MedSRLib.evaluation.metrics import psnr
    hr = ndimage.gaussian_filter(np.random.default_rng(0).random((24, 24, 24)), 1.2).astype(np.float32)
    hr = (hr - hr.min()) / (hr.max() - hr.min())
    source, output = tmp_path / "lr.nrrd", tmp_path / "sr.nrrd"
    MedSRLib.write_volume(MedSRLib.Volume(block_mean(hr, (2, 2, 2)), spacing=(2.0, 2.0, 2.0)), source)
    provenance = tmp_path / "sr.json"
    assert cli.main(["super-resolve", str(source), str(output), "--method", "threeplayer", "--scale", "2",
                     "--device", "cpu", "--normalisation", "minmax", "--metadata-json", str(provenance)]) == 0
    result = MedSRLib.read_volume(output)
    assert result.array.shape == hr.shape and result.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert json.loads(provenance.read_text())["checkpoint"] == "threeplayer-fast-x2"  # offered first on a CPU
    linear = MedSRLib.super_resolve(MedSRLib.read_volume(source), "linear", 2).array
    assert psnr(result.array, hr) > psnr(linear, hr)
