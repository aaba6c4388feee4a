"""Volume I/O keeps geometry in every format; bad input gets one clear error and no output."""
import locale
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSRLib.errors import InputError
from MedSRLib.io.volume import Volume, validate_volume
from MedSRLib.io.volume_files import read_volume, write_volume

OBLIQUE = (0.8, -0.6, 0.0, 0.36, 0.48, -0.8, 0.48, 0.64, 0.6)


def make_volume(shape=(6, 7, 8), dtype=np.int16, spacing=(0.9, 1.1, 3.0), origin=(10.0, -20.0, 5.0)):
    array = (np.arange(np.prod(shape)).reshape(shape) % 97).astype(dtype)
    return Volume(array, spacing, origin, OBLIQUE)


@pytest.mark.parametrize("name", ["v.nrrd", "v.nii", "v.nii.gz", "v.mha"])
def test_round_trip_keeps_array_and_geometry(tmp_path, name):
    volume = make_volume()
    write_volume(volume, tmp_path / name)
    back = read_volume(tmp_path / name)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.array.dtype == volume.array.dtype
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-5)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def write_dicom_series(volume: Volume, folder):
    """One file per k slice with the position, orientation and spacing tags a DICOM reader needs. ITK's DICOM writer
    sets the C locale for the whole process; the caller's is restored, or later tests would decode the text output of
    their subprocesses as ASCII."""
    caller_locale = locale.setlocale(locale.LC_ALL)
    try:
        write_slices(volume, folder)
    finally:
        locale.setlocale(locale.LC_ALL, caller_locale)


def write_slices(volume: Volume, folder):
    image = volume.to_sitk()
    direction = np.reshape(volume.direction, (3, 3))
    orientation = "\\".join(f"{v:.6f}" for v in list(direction[:, 0]) + list(direction[:, 1]))
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        position = volume.index_to_physical((0, 0, k))
        tags = {"0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": "1.2.826.0.1.3680043.2.1125.2",
                "0020|0032": "\\".join(f"{v:.6f}" for v in position), "0020|0037": orientation,
                "0020|0013": str(k + 1), "0028|0030": f"{volume.spacing[1]}\\{volume.spacing[0]}",
                "0018|0050": str(volume.spacing[2])}
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)


def test_dicom_series_folder_is_read_with_its_geometry(tmp_path):
    volume = make_volume(shape=(5, 6, 7))
    write_dicom_series(volume, tmp_path)
    back = read_volume(tmp_path)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-4)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-4)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "nothing.nrrd")


def test_corrupt_file(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InputError, match="Could not read"):
        read_volume(path)


def test_truncated_file(tmp_path):
    write_volume(make_volume(), tmp_path / "v.nrrd")
    data = (tmp_path / "v.nrrd").read_bytes()
    (tmp_path / "cut.nrrd").write_bytes(data[: len(data) // 2])  # inside the header
    with pytest.raises(InputError, match="Could not read"):
        read_volume(tmp_path / "cut.nrrd")


@pytest.mark.parametrize("name", ["v.nrrd", "v.mha", "v.nii", "v.nii.gz"])
@pytest.mark.parametrize("keep", [0.5, -10])
def test_a_file_cut_inside_its_voxel_data_is_refused(tmp_path, name, keep):
    """SimpleITK zero-fills a cut NIfTI file; MedSR checks the size its header announces."""
    write_volume(make_volume(), tmp_path / name)
    data = (tmp_path / name).read_bytes()
    (tmp_path / f"cut-{name}").write_bytes(data[:int(len(data) * keep) if keep > 0 else keep])
    with pytest.raises(InputError, match="Could not read"):
        read_volume(tmp_path / f"cut-{name}")


def test_a_cut_uncompressed_nifti_names_the_missing_bytes(tmp_path):
    write_volume(make_volume(), tmp_path / "v.nii")
    data = (tmp_path / "v.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[:-10])
    with pytest.raises(InputError, match=f"announces {len(data)} bytes, it holds {len(data) - 10}"):
        read_volume(tmp_path / "cut.nii")


def test_empty_dicom_folder(tmp_path):
    with pytest.raises(InputError, match="no DICOM series"):
        read_volume(tmp_path)


def test_2d_image_is_refused(tmp_path):
    sitk.WriteImage(sitk.Image(10, 10, sitk.sitkUInt8), str(tmp_path / "flat.nrrd"))
    with pytest.raises(InputError, match="2D"):
        read_volume(tmp_path / "flat.nrrd")


def test_single_slice_volume_is_refused():
    with pytest.raises(InputError, match="2D image"):
        validate_volume(Volume(np.random.rand(1, 10, 10), (1, 1, 1)))


def test_4d_volume_is_refused(tmp_path):
    sitk.WriteImage(sitk.Image([4, 4, 4, 3], sitk.sitkFloat32), str(tmp_path / "t.nii.gz"))
    with pytest.raises(InputError, match="4D"):
        read_volume(tmp_path / "t.nii.gz")


def test_rgb_volume_is_refused(tmp_path):
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkVectorUInt8, 3), str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match="components"):
        read_volume(tmp_path / "rgb.nrrd")


def test_nan_voxels_are_refused():
    volume = make_volume(dtype=np.float32)
    volume.array[1, 2, 3] = np.nan
    volume.array[2, 2, 3] = np.inf
    with pytest.raises(InputError, match="2 NaN or infinite"):
        validate_volume(volume)


def test_constant_volume_is_refused():
    with pytest.raises(InputError, match="constant"):
        validate_volume(Volume(np.full((4, 4, 4), 7.0), (1, 1, 1)))


@pytest.mark.parametrize("spacing", [(1, 0, 1), (1, 1, -2)])
def test_non_positive_spacing_is_refused(spacing):
    with pytest.raises(InputError, match="spacing"):
        validate_volume(Volume(np.random.rand(4, 4, 4), spacing))


def test_label_map_gets_a_warning():
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[2:5, 2:5, 2:5] = 3
    with pytest.warns(UserWarning, match="label map"):
        validate_volume(Volume(labels, (1, 1, 1)))


def test_output_in_a_missing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_volume(make_volume(), tmp_path / "no" / "out.nrrd")


def test_output_with_unknown_extension(tmp_path):
    with pytest.raises(InputError, match="must end in"):
        write_volume(make_volume(), tmp_path / "out.png")


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder where files cannot be created; root ignores permission bits, so root gets /sys."""
    if os.geteuid() != 0:
        tmp_path.chmod(0o500)
        yield tmp_path
        tmp_path.chmod(0o700)
    else:
        yield "/sys"


def test_output_in_a_read_only_folder(read_only_folder):
    with pytest.raises(InputError, match="(not writable|Cannot write)"):
        write_volume(make_volume(), os.path.join(read_only_folder, "out.nrrd"))
    assert not os.path.exists(os.path.join(read_only_folder, "out.nrrd"))


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def failing_write(image, path, *args, **kwargs):
        with open(path, "wb") as partial:
            partial.write(b"partial")
        raise RuntimeError("disk full")
    monkeypatch.setattr(sitk, "WriteImage", failing_write)
    with pytest.raises(InputError, match="disk full"):
        write_volume(make_volume(), tmp_path / "out.nrrd")
    assert list(tmp_path.iterdir()) == []


def heudiconv_mosaic_files():
    from MedSRLib.evaluation.datasets import load_manifest
    try:
        folder = load_manifest()["heudiconv-epi"]["dicom_folder"]
    except (KeyError, InputError, FileNotFoundError):
        pytest.skip("The heudiconv EPI is not in the data cache (run `medsr fetch-data`).")
    return sorted(Path(folder).glob("*.dcm"))


def test_siemens_mosaic_file_is_unpacked_into_a_volume():
    volume = read_volume(heudiconv_mosaic_files()[0])
    assert volume.array.shape == (81, 152, 150)
    np.testing.assert_allclose(volume.spacing, (1.5, 1.5, 1.5), atol=1e-6)
    validate_volume(volume)
    # Tiles unpacked in order: neighbouring slices look alike (correlation 0.79 at least, 0.90 on average), unlike
    # tiles taken column by column (down to 0.19), and no slice is an empty mosaic cell.
    slices = volume.array.reshape(81, -1).astype(np.float64)
    neighbours = [np.corrcoef(slices[k], slices[k + 1])[0, 1] for k in range(80)]
    assert min(neighbours) > 0.7 and slices.mean(axis=1).min() > 0


def test_folder_of_mosaic_volumes_is_refused():
    files = heudiconv_mosaic_files()
    with pytest.raises(InputError, match="Siemens mosaic"):
        read_volume(files[0].parent)
