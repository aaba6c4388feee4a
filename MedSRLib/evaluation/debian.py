"""Debian packages without Debian's tools: members read out of a .deb in pure Python, and a .deb downloaded straight
from Debian's pool, so the data fetch also works where dpkg-deb and apt-get are missing (macOS, Windows, other Linux).

A .deb is an ``ar`` archive holding ``debian-binary``, ``control.tar.*`` and ``data.tar.*``; the files the package
installs are in ``data.tar.*``, under paths like ``./usr/share/...``.
"""
import io
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Dict, Set, Tuple

from MedSRLib.errors import MedSRError
from MedSRLib.files import file_sha256

MIRROR_VARIABLE = "MEDSR_DEBIAN_MIRROR"
DEFAULT_MIRROR = "https://deb.debian.org/debian"
DOWNLOAD_TIMEOUT_S = 60

AR_MAGIC = b"!<arch>\n"
AR_HEADER_BYTES = 60  # name 16, mtime 12, uid 6, gid 6, mode 8, size 10, "`\n" 2
AR_SIZE_FIELD = slice(48, 58)
AR_HEADER_END = b"`\n"
# The data.tar compressions the standard library reads; zstd (Ubuntu's packages) needs the zstandard package.
TAR_STREAM_MODES = {"data.tar": "r|", "data.tar.gz": "r|gz", "data.tar.xz": "r|xz", "data.tar.bz2": "r|bz2"}
ZSTD_DATA_TAR = "data.tar.zst"


@dataclass(frozen=True)
class PoolEntry:
    """Where a binary package's .deb lies in Debian's pool, and its sha256 (as the archive's Packages index gives it)."""
    source: str          # the source package, which names the pool folder
    architecture: str
    sha256: str


def pool_url(package: str, version: str, entry: PoolEntry) -> str:
    """The .deb's address in Debian's pool, on ``$MEDSR_DEBIAN_MIRROR`` or deb.debian.org."""
    mirror = (os.environ.get(MIRROR_VARIABLE) or DEFAULT_MIRROR).rstrip("/")
    # Pool folders are named by the source's first letter, or its first four letters for lib* sources.
    prefix = entry.source[:4] if entry.source.startswith("lib") else entry.source[0]
    # File names leave out the version's epoch ("1:2.0-3" -> "2.0-3").
    file_name = f"{package}_{version.split(':')[-1]}_{entry.architecture}.deb"
    return f"{mirror}/pool/main/{prefix}/{entry.source}/{file_name}"


def download_from_pool(package: str, version: str, entry: PoolEntry, folder: Path) -> Path:
    """Download the .deb into ``folder`` (a scratch folder the caller removes), check its sha256, return its path."""
    url = pool_url(package, version, entry)
    target = folder / url.rsplit("/", 1)[1]
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(target, "wb") as sink:
            shutil.copyfileobj(response, sink)
    except urllib.error.HTTPError as error:
        raise MedSRError(f"Could not download {url} (HTTP {error.code}).") from None
    except OSError as error:  # URLError, timeouts, a full disk
        raise MedSRError(f"Could not download {url} ({getattr(error, 'reason', error)}).") from None
    actual = file_sha256(target)
    if actual != entry.sha256:
        raise MedSRError(f"{url} has sha256 {actual[:12]}…, not the pinned {entry.sha256[:12]}…; it was not used.")
    return target


class _ArMemberReader(io.RawIOBase):
    """The next ``size`` bytes of an open file, read as a file of their own (tarfile must not read past the member)."""

    def __init__(self, handle: BinaryIO, size: int):
        self._handle, self._left = handle, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._handle.read(min(len(buffer), self._left))
        buffer[:len(chunk)] = chunk
        self._left -= len(chunk)
        return len(chunk)


def _find_data_tar(handle: BinaryIO, archive_name: str) -> Tuple[str, BinaryIO]:
    """Walk the ar archive up to its data.tar.* member; return the member's name and a reader of its bytes."""
    if handle.read(len(AR_MAGIC)) != AR_MAGIC:
        raise MedSRError(f"{archive_name} is not a Debian package (it is no ar archive).")
    while header := handle.read(AR_HEADER_BYTES):
        size_field = header[AR_SIZE_FIELD].strip()
        if len(header) < AR_HEADER_BYTES or header[-2:] != AR_HEADER_END or not size_field.isdigit():
            raise MedSRError(f"{archive_name} is damaged (a broken ar member header).")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")  # GNU ar ends names with '/'
        size = int(size_field)
        if name.startswith("data.tar"):
            return name, _ArMemberReader(handle, size)
        handle.seek(size + size % 2, os.SEEK_CUR)  # member data is padded to an even length
    raise MedSRError(f"{archive_name} has no data.tar member.")


def _open_data_tar(name: str, data: BinaryIO, archive_name: str) -> tarfile.TarFile:
    if name == ZSTD_DATA_TAR:
        try:
            import zstandard
        except ImportError:
            raise MedSRError(f"{archive_name} is compressed with zstd, which needs the zstandard package "
                             f"(pip install zstandard).") from None
        return tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(data), mode="r|")
    if name not in TAR_STREAM_MODES:
        raise MedSRError(f"{archive_name} holds {name}, a compression MedSR cannot read.")
    return tarfile.open(fileobj=data, mode=TAR_STREAM_MODES[name])


def _package_path(member_name: str, archive_name: str) -> str:
    """A data.tar member's path without its leading './'; a path that points outside the package is refused."""
    path = PurePosixPath(member_name)
    if path.is_absolute() or ".." in path.parts:
        raise MedSRError(f"{archive_name} holds '{member_name}', a path outside the package, so it was not used.")
    return path.as_posix()


def extract_deb_members(archive: Path, wanted: Dict[str, Path]) -> Set[str]:
    """Copy the files named in ``wanted`` (path in the package, e.g. ``usr/share/x`` -> target file) out of a .deb.

    Returns the paths found. Every member's path is checked, not only the wanted ones: a package holding an absolute
    path or '..' is refused whole.
    """
    found = set()
    with open(archive, "rb") as handle:
        name, data = _find_data_tar(handle, archive.name)
        with _open_data_tar(name, data, archive.name) as tar:
            for info in tar:
                member = _package_path(info.name, archive.name)
                if member in wanted and info.isfile():
                    with tar.extractfile(info) as source, open(wanted[member], "wb") as sink:
                        shutil.copyfileobj(source, sink)
                    found.add(member)
    return found
