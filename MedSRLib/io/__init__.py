"""Volumes: the :class:`Volume` type and its readers and writers (NRRD, NIfTI, MHA, DICOM, Siemens mosaic)."""
from .volume import Volume, validate_volume
from .volume_files import check_output_path, read_volume, write_volume

__all__ = ["Volume", "validate_volume", "read_volume", "write_volume", "check_output_path"]
