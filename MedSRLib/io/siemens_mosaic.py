"""Siemens mosaic DICOM: one file holding every slice of a volume tiled as one 2D image (EPI, diffusion, fMRI).

SimpleITK reads such a file as one huge 2D image; :func:`read_siemens_mosaic` cuts it into slices and rebuilds the 3D
geometry from the standard tags and the Siemens CSA header.
"""
import re
import struct
from pathlib import Path
from typing import List

import numpy as np
import SimpleITK as sitk

from MedSRLib.errors import InputError
from .volume import Volume

MOSAIC_MARKER = b"NumberOfImagesInMosaic"


def is_siemens_mosaic(path) -> bool:
    """True for a DICOM file whose Siemens CSA header gives a number of images in a mosaic."""
    with open(path, "rb") as stream:
        return MOSAIC_MARKER in stream.read()


def _csa_values(raw: bytes, tag_name: str) -> List[str]:
    """The values of one tag of a Siemens CSA2 header, found by name in the raw DICOM bytes ([] when absent).

    CSA2 tag layout: name (64 bytes), vm, vr (4 bytes), syngodt, item count, a marker (int32 each except vr), then per
    item four int32 whose second is the value length, and the value padded to a multiple of 4 bytes.
    """
    match = re.search(re.escape(tag_name.encode()) + b"\x00", raw)
    if match is None:
        return []
    position = match.start() + 64 + 4 + 4 + 4
    item_count = struct.unpack_from("<i", raw, position)[0]
    position += 8
    values = []
    for _ in range(item_count):
        length = struct.unpack_from("<4i", raw, position)[1]
        position += 16
        value = raw[position:position + length].split(b"\x00", 1)[0].decode("latin-1").strip()
        if value:
            values.append(value)
        position += (length + 3) // 4 * 4
    return values


def read_siemens_mosaic(path) -> Volume:
    """Unpack one Siemens mosaic DICOM file (all slices of a volume tiled in one image) into a 3D volume.

    The origin is moved from the mosaic's corner to the first tile's, as dcm2niix and nibabel do; the slice direction is
    the CSA SliceNormalVector (the cross product of the in-plane directions when absent).
    """
    raw = Path(path).read_bytes()
    counts = _csa_values(raw, "NumberOfImagesInMosaic")
    if not counts:
        raise InputError(f"'{path}' is not a Siemens mosaic DICOM file (no NumberOfImagesInMosaic).")
    slice_count = int(counts[0])
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    mosaic = sitk.GetArrayFromImage(reader.Execute())[0]
    tiles_per_side = int(np.ceil(np.sqrt(slice_count)))
    tile_rows, tile_columns = mosaic.shape[0] // tiles_per_side, mosaic.shape[1] // tiles_per_side
    slices = [mosaic[(n // tiles_per_side) * tile_rows:(n // tiles_per_side + 1) * tile_rows,
                     (n % tiles_per_side) * tile_columns:(n % tiles_per_side + 1) * tile_columns]
              for n in range(slice_count)]

    orientation = np.array([float(v) for v in reader.GetMetaData("0020|0037").split("\\")])
    row_direction, column_direction = orientation[:3], orientation[3:]
    normal = [float(v) for v in _csa_values(raw, "SliceNormalVector")]
    slice_direction = np.array(normal) if len(normal) == 3 else np.cross(row_direction, column_direction)
    row_spacing, column_spacing = (float(v) for v in reader.GetMetaData("0028|0030").split("\\"))
    slice_spacing = float(reader.GetMetaData("0018|0088"))
    corner = np.array([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
    origin = (corner + row_direction * column_spacing * (mosaic.shape[1] - tile_columns) / 2
              + column_direction * row_spacing * (mosaic.shape[0] - tile_rows) / 2)
    direction = np.stack([row_direction, column_direction, slice_direction], axis=1)
    return Volume(np.stack(slices), (column_spacing, row_spacing, slice_spacing), tuple(origin),
                  tuple(direction.ravel()))
