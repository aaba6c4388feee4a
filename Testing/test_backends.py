"""Inference backends (MedSRLib.engine.backends): the same result from each, a conversion paid once, and torch's result
with one warning when a conversion fails."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from MedSRLib.apps.cli import main
from MedSRLib.engine import backends
from MedSRLib.engine.backends import AUTO_MIN_OUTPUT_VOXELS, choose_backend
from MedSRLib.io.volume import Volume
from MedSRLib.io.volume_files import read_volume, write_volume

needs_openvino = pytest.mark.skipif(not backends.openvino_available(),
                                    reason='OpenVINO is not installed (pip install "medsr[openvino]")')
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small_scan(tmp_path_factory):
    """A smooth 20³ volume with intensities in [0, 1], so differences read as fractions of the range."""
    array = gaussian_filter(np.random.default_rng(0).random((20, 20, 20)), sigma=2)
    array = ((array - array.min()) / np.ptp(array)).astype(np.float32)
    path = tmp_path_factory.mktemp("scan") / "scan.nrrd"
    write_volume(Volume(array, (2.0, 2.0, 2.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)), path)
    return path


def super_resolve(scan, output, backend, capsys):
    """``medsr super-resolve`` with the shipped threeplayer-x2 model in 12³ windows; returns (array, stderr lines)."""
    code = main(["super-resolve", str(scan), str(output), "--method", "threeplayer", "--patch", "12",
                 "--backend", backend, "--device", "cpu", "--quiet"])
    stderr = capsys.readouterr().err.strip().splitlines()
    assert code == 0, stderr
    return read_volume(output).array, [line for line in stderr if not line.startswith("wrote ")]


@pytest.fixture(scope="module")
def backend_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("backends")


@pytest.fixture
def cache_dir(backend_cache, monkeypatch):
    monkeypatch.setenv("MEDSR_BACKEND_CACHE_DIR", str(backend_cache))
    return backend_cache


@needs_openvino
def test_openvino_gives_torchs_result_and_converts_once(small_scan, cache_dir, tmp_path, capsys, monkeypatch):
    with_torch, _ = super_resolve(small_scan, tmp_path / "torch.nrrd", "torch", capsys)
    with_openvino, warnings = super_resolve(small_scan, tmp_path / "openvino.nrrd", "openvino", capsys)
    assert warnings == []
    assert np.abs(with_openvino - with_torch).max() <= 1e-4
    assert len(list(cache_dir.glob("*.xml"))) == 1

    def no_conversion(*args):
        raise AssertionError("converted again although the conversion is cached")
    monkeypatch.setattr(backends, "_convert_to_openvino", no_conversion)
    again, warnings = super_resolve(small_scan, tmp_path / "again.nrrd", "openvino", capsys)
    assert warnings == []
    np.testing.assert_array_equal(again, with_openvino)
    # auto takes the cached conversion even for a volume this small.
    automatic, _ = super_resolve(small_scan, tmp_path / "auto.nrrd", "auto", capsys)
    np.testing.assert_array_equal(automatic, with_openvino)


@needs_openvino
def test_a_failed_conversion_warns_once_and_gives_torchs_result(small_scan, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEDSR_BACKEND_CACHE_DIR", str(tmp_path / "empty-cache"))

    attempts = []

    def failing_conversion(*args):
        attempts.append(args)
        raise RuntimeError("unsupported operation aten::example\nwith a long trace")
    monkeypatch.setattr(backends, "_convert_to_openvino", failing_conversion)
    monkeypatch.setattr(backends, "_FAILED_CONVERSIONS", set())
    with_torch, _ = super_resolve(small_scan, tmp_path / "torch.nrrd", "torch", capsys)
    fallen_back, warnings = super_resolve(small_scan, tmp_path / "openvino.nrrd", "openvino", capsys)
    assert warnings == ["medsr: warning: OpenVINO could not convert the model (unsupported operation aten::example); "
                        "running it with torch."]
    np.testing.assert_array_equal(fallen_back, with_torch)
    # The same model and window again in this process: not tried again, no second warning.
    again, warnings = super_resolve(small_scan, tmp_path / "again.nrrd", "openvino", capsys)
    assert warnings == [] and len(attempts) == 1
    np.testing.assert_array_equal(again, with_torch)


def test_auto_converts_only_where_it_pays_and_the_network_allows(monkeypatch):
    monkeypatch.setattr(backends, "openvino_available", lambda: True)
    large = AUTO_MIN_OUTPUT_VOXELS
    assert choose_backend("auto", CPU, False, large, already_converted=False) == "openvino"
    assert choose_backend("auto", CPU, False, large - 1, already_converted=False) == "torch"
    assert choose_backend("auto", CPU, False, 1, already_converted=True) == "openvino"
    assert choose_backend("auto", CPU, True, large, already_converted=True) == "torch"
    assert choose_backend("auto", torch.device("cuda"), False, large, already_converted=True) == "torch"
    assert choose_backend("torch", CPU, False, large, already_converted=True) == "torch"
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    assert choose_backend("auto", CPU, False, large, already_converted=False) == "torch"


def test_openvino_asked_for_where_it_cannot_run_warns_and_uses_torch(monkeypatch):
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    with pytest.warns(UserWarning, match=r"not installed \(pip install \"medsr\[openvino\]\"\); running it with torch"):
        assert choose_backend("openvino", CPU, False, 1, already_converted=False) == "torch"
    monkeypatch.setattr(backends, "openvino_available", lambda: True)
    with pytest.warns(UserWarning, match="output coordinates beside the image"):
        assert choose_backend("openvino", CPU, True, 1, already_converted=False) == "torch"


def test_an_unknown_backend_is_one_clear_error(small_scan, tmp_path, capsys):
    from MedSRLib.api import super_resolve as api_super_resolve
    from MedSRLib.errors import InputError
    with pytest.raises(InputError, match="Unknown backend 'tensorrt'; choose one of auto, torch, openvino."):
        api_super_resolve(read_volume(small_scan), "threeplayer", 2, backend="tensorrt")
