"""kidneyseg.io.dicom: series found, picked and read with exact geometry; compressed syntaxes; zips; errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, generate_uid

from kidneyseg.errors import KidneysegError
from kidneyseg.io import load_volume
from kidneyseg.io.dicom_files import list_series

from .dicom_helpers import expected_affine, phantom, write_ct_series, zip_folder

SPACING = (2.5, 0.8, 0.75)


def _file_array(vol):
    """The volume back in its (slice, row, column) file layout."""
    from kidneyseg.io import from_canonical

    return from_canonical(vol.array, vol.source)


def test_series_reads_exact_voxels_and_dicom_geometry(tmp_path):
    ct = phantom()
    folder = write_ct_series(ct, tmp_path / "s")
    vol = load_volume(folder)
    assert vol.array.dtype == np.float32 and vol.source.format == "dicom"
    np.testing.assert_array_equal(_file_array(vol), ct.astype(np.float32))   # rescale applied, order kept
    np.testing.assert_allclose(vol.source.affine, expected_affine(SPACING), atol=1e-6)
    assert vol.spacing == pytest.approx((2.5, 0.8, 0.75))
    assert len(vol.source.dicom.headers) == ct.shape[0] and "PixelData" not in vol.source.dicom.headers[0]
    # the same series through SimpleITK gives the same voxels and the same world positions
    import SimpleITK as sitk

    from kidneyseg.io.itk_files import sitk_affine

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), ct)
    np.testing.assert_allclose(sitk_affine(img), vol.source.affine, atol=1e-4)


def test_shuffled_files_read_in_position_order(tmp_path):
    ct = phantom(seed=3)
    a = load_volume(write_ct_series(ct, tmp_path / "ordered"))
    b = load_volume(write_ct_series(ct, tmp_path / "shuffled", shuffle=True, seed=7))
    import pydicom

    by_name = [float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in sorted((tmp_path / "shuffled").iterdir())]
    assert by_name != sorted(by_name)   # file names (and instance numbers) do not follow the anatomy
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine)
    # the slice headers travel in array order: positions increase along the slice axis
    z = [float(h.ImagePositionPatient[2]) for h in b.source.dicom.headers]
    assert z == sorted(z)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless], ids=["jpeg2000", "jpeg-ls"])
def test_compressed_transfer_syntaxes(tmp_path, syntax):
    ct = phantom(seed=1)
    folder = write_ct_series(ct, tmp_path / "c", transfer_syntax=syntax)
    import pydicom

    assert pydicom.dcmread(next(folder.iterdir())).file_meta.TransferSyntaxUID == syntax
    vol = load_volume(folder)
    np.testing.assert_array_equal(_file_array(vol), ct.astype(np.float32))


def test_zip_of_a_series_and_bad_zips(tmp_path):
    ct = phantom(seed=2)
    z = zip_folder(write_ct_series(ct, tmp_path / "s"), tmp_path / "study.zip")
    vol = load_volume(z)
    np.testing.assert_array_equal(_file_array(vol), ct.astype(np.float32))
    assert vol.source.path == str(z)
    import zipfile

    empty = tmp_path / "nodicom.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no images here")
    with pytest.raises(KidneysegError, match="no DICOM files found in the archive") as info:
        load_volume(empty)
    assert str(empty) in str(info.value) and "\n" not in str(info.value)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(KidneysegError, match="not a readable .zip"):
        load_volume(broken)


def test_empty_folder_and_folder_without_dicom(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(KidneysegError, match="no DICOM files found"):
        load_volume(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("hello")
    with pytest.raises(KidneysegError, match="no DICOM files found"):
        load_volume(tmp_path / "text")


def test_largest_axial_ct_series_is_picked_and_ties_are_refused(tmp_path):
    study = generate_uid()
    big, small = generate_uid(), generate_uid()
    root = tmp_path / "study"
    write_ct_series(phantom((12, 32, 32)), root / "a", series_uid=big, study_uid=study)
    write_ct_series(phantom((8, 32, 32)), root / "b", series_uid=small, study_uid=study)
    write_ct_series(phantom((12, 32, 32)), root / "c", series_uid=generate_uid(), study_uid=study,
                    orientation=(1, 0, 0, 0, 0, -1), description="coronal reformat")  # larger? equal, not axial
    write_ct_series(phantom((14, 32, 32)), root / "d", series_uid=generate_uid(), study_uid=study, modality="MR")
    vol = load_volume(root)
    assert vol.source.dicom.uid == big and vol.shape[0] == 12
    assert load_volume(root, series_uid=small).source.dicom.uid == small
    series, chosen = list_series(root)
    assert len(series) == 4 and chosen.uid == big
    assert {s.orientation for s in series} == {"axial", "coronal"}
    with pytest.raises(KidneysegError, match="no series with UID 1.2.3"):
        load_volume(root, series_uid="1.2.3")
    # a second axial CT series of the same size: the choice is the user's
    twin = generate_uid()
    write_ct_series(phantom((12, 32, 32)), root / "e", series_uid=twin, study_uid=study)
    with pytest.raises(KidneysegError, match="2 axial CT series are equally large") as info:
        load_volume(root)
    msg = str(info.value)
    assert big in msg and twin in msg and "--series" in msg and "\n" not in msg
    assert list_series(root)[1] is None
    assert load_volume(root, series_uid=twin).source.dicom.uid == twin


def test_gantry_tilt_is_kept_exactly_with_a_warning(tmp_path):
    ct = phantom(seed=4)
    tilt = 2.5 * np.tan(np.radians(15.0))   # 15 degrees
    folder = write_ct_series(ct, tmp_path / "t", tilt_mm_per_slice=tilt)
    with pytest.warns(UserWarning, match=r"gantry tilt of 15.0 degrees") as rec:
        vol = load_volume(folder)
    assert not any("oblique" in str(w.message) for w in rec)   # one warning, not two
    assert vol.source.dicom.tilt_degrees == pytest.approx(15.0, abs=0.01)
    np.testing.assert_allclose(vol.source.affine, expected_affine(SPACING, tilt_mm_per_slice=tilt), atol=1e-3)
    # every slice's first voxel lands on its ImagePositionPatient (LPS -> RAS)
    for k, h in enumerate(vol.source.dicom.headers):
        ras = vol.source.affine @ np.array([k, 0, 0, 1.0])
        np.testing.assert_allclose(ras[:3] * [-1, -1, 1], [float(v) for v in h.ImagePositionPatient], atol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_volume(write_ct_series(ct, tmp_path / "straight"))   # no warning without a tilt


@pytest.mark.parametrize("positions, match", [
    ([0, 2.5, 5, 7.5, 12.5, 15, 17.5, 20, 22.5, 25], "not uniform"),          # a missing slice
    ([0, 2.5, 5, 5, 7.5, 10, 12.5, 15, 17.5, 20], "same position"),         # a duplicated slice
], ids=["missing-slice", "duplicate-slice"])
def test_non_uniform_slices_are_refused(tmp_path, positions, match):
    folder = write_ct_series(phantom(), tmp_path / "s", slice_positions=positions)
    with pytest.raises(KidneysegError, match=match) as info:
        load_volume(folder)
    assert str(folder) in str(info.value) and "\n" not in str(info.value)


def test_single_file_and_series_flag_on_nifti(tmp_path, write_nifti):
    folder = write_ct_series(phantom(), tmp_path / "s")
    with pytest.raises(KidneysegError, match="single DICOM file"):
        load_volume(next(folder.iterdir()))
    path = write_nifti(phantom(), np.eye(4), "ct.nii.gz", np.int16)
    with pytest.raises(KidneysegError, match="--series applies to DICOM"):
        load_volume(path, series_uid="1.2.3")
