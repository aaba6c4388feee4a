"""Reading and writing volumes: NRRD, NIfTI, MHA/MHD, DICOM series folders and Siemens mosaic DICOM files."""
import os
import tempfile

import SimpleITK as sitk

from MedSRLib.errors import InputError
from .nifti import check_nifti_complete
from .siemens_mosaic import is_siemens_mosaic, read_siemens_mosaic
from .volume import Volume

WRITABLE_EXTENSIONS = (".nrrd", ".nii", ".nii.gz", ".mha")


def read_volume(path) -> Volume:
    """Read a NRRD, NIfTI, MHA/MHD file or a DICOM series folder; raise :class:`InputError` if it is not a 3D scalar volume."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"Input '{path}' does not exist.")
    if os.path.isfile(path) and is_siemens_mosaic(path):
        return read_siemens_mosaic(path)
    check_nifti_complete(path)
    try:
        image = _read_dicom_series(path) if os.path.isdir(path) else sitk.ReadImage(path)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise InputError(f"Could not read '{path}' as a medical image ({first_line.strip()}).") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"'{path}' has {image.GetNumberOfComponentsPerPixel()} components per voxel (vector or RGB); "
                         "MedSR needs a scalar volume: extract one channel first.")
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise InputError(f"'{path}' is a {image.GetDimension()}D image of size {image.GetSize()}; MedSR needs a 3D volume"
                         + (" (extract one time point first)." if image.GetDimension() == 4 else "."))
    volume = Volume.from_sitk(image)
    volume.metadata["source"] = path
    return volume


def _dicom_series_ids(folder: str):
    """The folder's DICOM series, without ITK's raw "No Series were found" warning: an empty answer gets MedSR's own
    sentence."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _read_dicom_series(folder: str) -> sitk.Image:
    series = _dicom_series_ids(folder)
    if not series:
        raise InputError(f"Folder '{folder}' contains no DICOM series.")
    if len(series) > 1:
        raise InputError(f"Folder '{folder}' contains {len(series)} DICOM series; put one series per folder.")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, series[0])
    if is_siemens_mosaic(files[0]):
        raise InputError(f"Folder '{folder}' holds {len(files)} Siemens mosaic files, each a whole volume (a 4D series); "
                         "pass one of the files instead.")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def output_extension(path: str) -> str:
    lower = path.lower()
    for extension in WRITABLE_EXTENSIONS:
        if lower.endswith(extension):
            return extension
    raise InputError(f"Output '{path}' must end in one of {', '.join(WRITABLE_EXTENSIONS)}.")


def check_output_path(path) -> str:
    """Check, before any work, that a volume can be written to ``path``; return it as a string."""
    path = os.fspath(path)
    output_extension(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"Output folder '{folder}' does not exist.")
    if not os.access(folder, os.W_OK):
        raise InputError(f"Output folder '{folder}' is not writable.")
    return path


def write_volume(volume: Volume, path) -> None:
    """Write atomically: the file appears under ``path`` complete, or not at all."""
    path = check_output_path(path)
    extension = output_extension(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(prefix=".medsr-", suffix=extension, dir=folder)
    except OSError as error:
        raise InputError(f"Cannot write in output folder '{folder}' ({error.strerror}).") from None
    os.close(handle)
    try:
        sitk.WriteImage(volume.to_sitk(), temporary, useCompression=extension != ".nii")
        # mkstemp makes the file private (0600); give it the permissions a plain new file would get.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except (RuntimeError, OSError) as error:
        raise InputError(f"Could not write '{path}' ({str(error).strip().splitlines()[-1].strip()}).") from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
