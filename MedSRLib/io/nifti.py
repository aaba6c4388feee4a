"""A check SimpleITK does not make: that a NIfTI file holds all the voxel data its header announces.

SimpleITK's NIfTI reader fills data missing at the end of a truncated file with zeros, so a file cut short (an
interrupted copy or download) would load as a volume whose last slices are silently black.
"""
import gzip
import struct
import zlib
from pathlib import Path

from MedSRLib.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
CHUNK_BYTES = 1 << 20


def _header_sizes(header: bytes):
    """(voxel data offset, voxel data bytes) from a NIfTI-1 or NIfTI-2 header, or None when it is neither."""
    for endian in "<>":
        size = struct.unpack(endian + "i", header[:4])[0] if len(header) >= 4 else 0
        if size == 348 and len(header) >= 348:  # NIfTI-1: data starts at vox_offset, at least after the 352-byte header
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = max(int(struct.unpack(endian + "f", header[108:112])[0]), 352)
            break
        if size == 540 and len(header) >= 540:  # NIfTI-2: 64-bit fields, data after the 544-byte header
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = max(struct.unpack(endian + "q", header[168:176])[0], 544)
            break
    else:
        return None
    voxels = 1
    for extent in dims[1:1 + min(max(dims[0], 0), 7)]:
        voxels *= max(extent, 1)
    return offset, voxels * bitpix // 8


def _stored_bytes(path: Path) -> int:
    """The file's length, uncompressed; InputError for a gzip stream that ends early."""
    if path.name.endswith(".gz"):
        total = 0
        try:
            with gzip.open(path, "rb") as stream:
                while chunk := stream.read(CHUNK_BYTES):
                    total += len(chunk)
        except (EOFError, OSError, zlib.error) as error:
            raise InputError(f"Could not read '{path}' as a medical image (its gzip data is cut short or damaged: "
                             f"{error}).") from None
        return total
    return path.stat().st_size


def check_nifti_complete(path) -> None:
    """InputError unless a .nii / .nii.gz file holds every voxel its header announces."""
    path = Path(path)
    if not path.name.endswith(NIFTI_SUFFIXES):
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(540)
    except (EOFError, OSError, zlib.error):
        header = b""
    sizes = _header_sizes(header)
    if sizes is None:
        return  # not a NIfTI header: SimpleITK gives its own message
    offset, data_bytes = sizes
    stored = _stored_bytes(path)
    if stored < offset + data_bytes:
        raise InputError(f"Could not read '{path}' as a medical image (the file is cut short: its header announces "
                         f"{offset + data_bytes} bytes, it holds {stored}).")
