"""Debian packages without apt-get and dpkg: pure-Python .deb extraction and the download from Debian's pool."""
import functools
import hashlib
import http.server
import io
import json
import sys
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import SimpleITK as sitk

from MedSRLib.errors import MedSRError
from MedSRLib.evaluation import datasets as data
from MedSRLib.evaluation.debian import PoolEntry, extract_deb_members, pool_url

MEMBER = "usr/share/fakepkg/volume.nii.gz"
PACKAGE, VERSION = "fakepkg", "1.0-1"


def tar_bytes(files: Dict[str, bytes], compression: str) -> bytes:
    """A tar archive (compression: 'xz', 'gz', 'bz2' or '' for none) holding ``files`` under their exact names."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def ar_member(name: str, content: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode("ascii")
    assert len(header) == 60
    return header + content + b"\n" * (len(content) % 2)


def build_deb(path: Path, files: Dict[str, bytes], data_member: str = "data.tar.xz", data_tar: bytes = None) -> Path:
    """A .deb as dpkg lays it out; its control.tar.gz has an odd size, so the ar padding is exercised."""
    control = "Package: fakepkg\nVersion: 1.0-1\nArchitecture: all\nDescription: test\n"
    while len(control_tar := tar_bytes({"./control": control.encode()}, "gz")) % 2 == 0:
        control += "\n"
    if data_tar is None:
        data_tar = tar_bytes({"./" + name: content for name, content in files.items()}, data_member.removeprefix("data.tar").lstrip("."))
    path.write_bytes(b"!<arch>\n" + ar_member("debian-binary", b"2.0\n") + ar_member("control.tar.gz", control_tar)
                     + ar_member(data_member, data_tar))
    return path


@pytest.fixture
def volume_bytes(tmp_path) -> bytes:
    """A tiny NIfTI volume, as the bytes of its .nii.gz file."""
    image = sitk.GetImageFromArray(np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5))
    sitk.WriteImage(image, str(tmp_path / "volume.nii.gz"))
    return (tmp_path / "volume.nii.gz").read_bytes()


@pytest.mark.parametrize("data_member", ["data.tar.xz", "data.tar.gz", "data.tar.bz2", "data.tar"])
def test_extraction_gives_the_member_bytes(tmp_path, volume_bytes, data_member):
    deb = build_deb(tmp_path / "p.deb", {MEMBER: volume_bytes, "usr/share/doc/fakepkg/copyright": b"free"}, data_member)
    target = tmp_path / "out.nii.gz"
    assert extract_deb_members(deb, {MEMBER: target, "usr/share/missing": tmp_path / "missing"}) == {MEMBER}
    assert target.read_bytes() == volume_bytes
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("evil", ["../evil", "./usr/../../evil", "/etc/evil"])
def test_a_member_outside_the_package_is_refused(tmp_path, evil):
    deb = tmp_path / "p.deb"
    build_deb(deb, {}, data_tar=tar_bytes({evil: b"x", "./" + MEMBER: b"volume"}, "xz"))
    with pytest.raises(MedSRError, match="a path outside the package"):
        extract_deb_members(deb, {MEMBER: tmp_path / "out"})


def test_not_a_deb_and_zstd_without_zstandard_say_so(tmp_path, monkeypatch):
    not_deb = tmp_path / "p.deb"
    not_deb.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(MedSRError, match="not a Debian package"):
        extract_deb_members(not_deb, {MEMBER: tmp_path / "out"})
    zstd_deb = build_deb(tmp_path / "z.deb", {}, "data.tar.zst", data_tar=b"\x28\xb5\x2f\xfd")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes `import zstandard` fail
    with pytest.raises(MedSRError, match=r"zstd, which needs the zstandard package \(pip install zstandard\)"):
        extract_deb_members(zstd_deb, {MEMBER: tmp_path / "out"})


def test_zstd_data_is_read_with_zstandard(tmp_path, volume_bytes):
    zstandard = pytest.importorskip("zstandard")
    compressed = zstandard.ZstdCompressor().compress(tar_bytes({"./" + MEMBER: volume_bytes}, ""))
    deb = build_deb(tmp_path / "p.deb", {}, "data.tar.zst", data_tar=compressed)
    assert extract_deb_members(deb, {MEMBER: tmp_path / "out"}) == {MEMBER}
    assert (tmp_path / "out").read_bytes() == volume_bytes


def test_pool_urls(monkeypatch):
    monkeypatch.delenv("MEDSR_DEBIAN_MIRROR", raising=False)
    # The addresses of apt-cache show's Filename field for the pinned packages.
    assert pool_url("mricron-data", "1.2.20211006+dfsg-4", data.get_dataset("colin27").pool) == \
        "https://deb.debian.org/debian/pool/main/m/mricron/mricron-data_1.2.20211006+dfsg-4_all.deb"
    assert pool_url("insighttoolkit5-examples", "5.2.1-5+deb12u1", data.get_dataset("itk-t1-aniso").pool) == \
        "https://deb.debian.org/debian/pool/main/i/insighttoolkit5/insighttoolkit5-examples_5.2.1-5+deb12u1_all.deb"
    monkeypatch.setenv("MEDSR_DEBIAN_MIRROR", "http://mirror.example/debian/")
    assert pool_url("libfoo1", "1:2.0-3", PoolEntry("libfoo", "amd64", "0" * 64)) == \
        "http://mirror.example/debian/pool/main/libf/libfoo/libfoo1_2.0-3_amd64.deb"
    assert all(dataset.pool is not None for dataset in data.DATASETS if dataset.registry == "debian")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def loopback_pool(tmp_path, monkeypatch, volume_bytes):
    """Debian's pool on a loopback HTTP server holding one built .deb; PATH without apt-get; a one-dataset table."""
    mirror = tmp_path / "mirror"
    deb_folder = mirror / "pool" / "main" / "f" / PACKAGE
    deb_folder.mkdir(parents=True)
    deb = build_deb(deb_folder / f"{PACKAGE}_{VERSION}_all.deb", {MEMBER: volume_bytes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(mirror)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MEDSR_DEBIAN_MIRROR", f"http://127.0.0.1:{server.server_address[1]}")
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("MEDSR_DATA_DIR", str(tmp_path / "cache"))
    (tmp_path / "scratch").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))

    def use_dataset(deb_sha256=hashlib.sha256(deb.read_bytes()).hexdigest(),
                    member_sha256=hashlib.sha256(volume_bytes).hexdigest()):
        dataset = data.Dataset("fake-deb", "heldout", "T1", "debian", PACKAGE, VERSION,
                               (data.Member(MEMBER, member_sha256),), "a fake", pool=PoolEntry(PACKAGE, "all", deb_sha256))
        monkeypatch.setattr(data, "DATASETS", (dataset,))

    yield {"use_dataset": use_dataset, "bin": tmp_path / "bin", "cache": tmp_path / "cache", "scratch": tmp_path / "scratch", "deb": deb}
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("apt_get", ["missing", "without the pinned version"])
def test_without_apt_get_the_package_comes_from_the_pool(loopback_pool, volume_bytes, apt_get):
    if apt_get != "missing":
        failing = loopback_pool["bin"] / "apt-get"
        failing.write_text("#!/bin/sh\necho \"E: Can't find a source to download version '1.0-1'\" >&2\nexit 100\n")
        failing.chmod(0o755)
    loopback_pool["use_dataset"]()
    manifest = data.fetch_datasets()
    assert manifest == loopback_pool["cache"] / "manifest.json"
    entry = json.loads(manifest.read_text())["datasets"][0]
    assert entry["source"] == "fakepkg==1.0-1 (debian)" and entry["size"] == [5, 4, 3]
    assert data.dataset_path("fake-deb").read_bytes() == volume_bytes
    assert list(loopback_pool["scratch"].iterdir()) == []


@pytest.mark.parametrize("wrong", ["deb", "member"])
def test_a_wrong_checksum_is_refused_and_leaves_nothing(loopback_pool, wrong):
    loopback_pool["use_dataset"](**{f"{wrong}_sha256": "0" * 64})
    with pytest.raises(MedSRError, match="not the pinned 000000000000…"):
        data.fetch_datasets()
    assert [path for path in loopback_pool["cache"].rglob("*")] == []
    assert list(loopback_pool["scratch"].iterdir()) == []


def test_a_package_missing_from_the_pool_is_one_sentence(loopback_pool):
    loopback_pool["use_dataset"]()
    loopback_pool["deb"].unlink()
    with pytest.raises(MedSRError, match=r"^Could not download http://127\.0\.0\.1:\d+/pool/main/f/fakepkg/"
                                         r"fakepkg_1\.0-1_all\.deb \(HTTP 404\)\.$"):
        data.fetch_datasets()
