"""NRRD/MHA input, Slicer .seg.nrrd and DICOM SEG output: each format round-trips into the same voxels."""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.errors import KidneysegError
from kidneyseg.io import from_canonical, load_volume, save_dicom_seg, save_seg_nrrd
from kidneyseg.io.itk_files import sitk_affine
from kidneyseg.io.segments import SEGMENTS

from .conftest import kits_affine, tiny_label
from .dicom_helpers import phantom, write_ct_series

RAS = np.array([[0.75, 0, 0, -100], [0, 0.8, 0, -120], [0, 0, 2.5, 30], [0, 0, 0, 1]], float)


def _sitk_image(array_kji, spacing_ijk, origin_lps, direction=None):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array_kji)
    img.SetSpacing(spacing_ijk)
    img.SetOrigin(origin_lps)
    if direction is not None:
        img.SetDirection(direction)
    return img


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_nrrd_and_mha_inputs_load_like_nifti(tmp_path, write_nifti, suffix):
    import SimpleITK as sitk

    lab = tiny_label()                                   # canonical (I, P, L)
    # the same anatomy as an LPS-ordered ITK file: index (i, j, k) -> (L, P, S), numpy (k, j, i)
    kji = np.ascontiguousarray(lab[::-1])                # k runs inferior -> superior
    img = _sitk_image(kji, (0.75, 0.8, 3.0), (10.0, 20.0, -30.0))
    path = tmp_path / f"lab{suffix}"
    sitk.WriteImage(img, str(path), True)
    vol = load_volume(path, kind="label")
    np.testing.assert_array_equal(vol.array, lab)
    assert vol.spacing == pytest.approx((3.0, 0.8, 0.75)) and vol.source.format in ("nrrd", "mha")
    # world position of voxel (0, 0, 0) of the canonical array = ITK index (0, 0, n-1), RAS
    n = lab.shape[0]
    lps = np.array(img.TransformIndexToPhysicalPoint((0, 0, n - 1)))
    np.testing.assert_allclose(vol.affine[:3, 3], lps * [-1, -1, 1])
    ct = (phantom((12, 20, 24)).astype(np.float32))
    sitk.WriteImage(_sitk_image(ct, (0.7, 0.7, 2.0), (0, 0, 0)), str(tmp_path / f"ct{suffix}"))
    assert load_volume(tmp_path / f"ct{suffix}").array.dtype == np.float32


def test_bad_nrrd_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\ntype: nonsense\n\n")
    with pytest.raises(KidneysegError, match="not a readable NRRD") as info:
        load_volume(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("layout", ["kits", "ras"])
def test_seg_nrrd_round_trips_voxels_geometry_and_segment_names(tmp_path, write_nifti, layout):
    import SimpleITK as sitk

    lab = tiny_label()
    data, aff = (lab, kits_affine((3.0, 0.8, 0.75))) if layout == "kits" else (
        lab[::-1, ::-1, ::-1].transpose(2, 1, 0), RAS)
    src = write_nifti(data, aff, "lab.nii.gz", np.uint8)
    vol = load_volume(src, kind="label")
    out = save_seg_nrrd(vol.array, tmp_path / "out.seg.nrrd", vol)
    img = sitk.ReadImage(str(out))
    back = sitk.GetArrayFromImage(img)
    np.testing.assert_array_equal(back, data)            # the NIfTI file's own voxel order
    np.testing.assert_allclose(sitk_affine(img), aff, atol=1e-6)
    again = load_volume(out, kind="label")               # and kidneyseg reads it back canonical
    np.testing.assert_array_equal(again.array, vol.array)
    np.testing.assert_allclose(again.affine, vol.affine, atol=1e-6)
    for n, seg in enumerate(SEGMENTS):
        assert img.GetMetaData(f"Segment{n}_Name") == seg.name
        assert img.GetMetaData(f"Segment{n}_LabelValue") == str(seg.label)
        assert seg.type.value in img.GetMetaData(f"Segment{n}_Tags")
    # the extent (ITK i j k order) bounds the tumor exactly
    kji = np.argwhere(back == 2)
    ext = [int(v) for v in img.GetMetaData("Segment1_Extent").split()]
    assert ext == [kji[:, 2].min(), kji[:, 2].max(), kji[:, 1].min(), kji[:, 1].max(), kji[:, 0].min(),
                   kji[:, 0].max()]
    with pytest.raises(KidneysegError, match=".nrrd"):
        save_seg_nrrd(vol.array, tmp_path / "out.nii.gz", vol)


def _labels_for(vol):
    lab = np.zeros(vol.shape, np.uint8)
    lab[vol.array > 150] = 1
    z, y, x = np.argwhere(lab == 1).mean(axis=0).astype(int)
    lab[z - 1: z + 2, y - 1: y + 2, x - 1: x + 2] = 2
    return lab


@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
def test_dicom_seg_reads_back_into_exactly_the_predicted_voxels(tmp_path, shuffle):
    import highdicom as hd
    import pydicom

    folder = write_ct_series(phantom((10, 32, 32), seed=5), tmp_path / "ct", shuffle=shuffle, seed=11)
    vol = load_volume(folder)
    labels = _labels_for(vol)
    out = save_dicom_seg(labels, tmp_path / "case.seg.dcm", vol)
    seg = hd.seg.segread(str(out))
    assert seg.Modality == "SEG" and seg.SeriesInstanceUID != vol.source.dicom.uid
    assert seg.StudyInstanceUID == vol.source.dicom.headers[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == vol.source.dicom.headers[0].FrameOfReferenceUID
    # segment codes: SNOMED kidney and neoplasm (with kidney as the anatomic region)
    d1, d2 = seg.get_segment_description(1), seg.get_segment_description(2)
    assert (d1.segment_label, d1.segmented_property_type.value, d1.segmented_property_type.scheme_designator) == (
        "kidney", "64033007", "SCT")
    assert d2.segmented_property_type.value == "108369006" and d2.anatomic_regions[0].value == "64033007"
    # read back by the referenced source instances, in the files' own (shuffled) order
    by_uid = {h.SOPInstanceUID: k for k, h in enumerate(vol.source.dicom.headers)}
    files = sorted(folder.iterdir())
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    back = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    expected = from_canonical(labels, vol.source)[[by_uid[u] for u in uids]]
    np.testing.assert_array_equal(back, expected)
    # every source image is referenced, and each frame sits at its source slice's position
    refs = {str(r.ReferencedSOPInstanceUID) for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert refs == set(by_uid)
    ipp = {h.SOPInstanceUID: [float(v) for v in h.ImagePositionPatient] for h in vol.source.dicom.headers}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        src = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        pos = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(pos, ipp[src], atol=1e-4)


def test_dicom_seg_needs_a_dicom_input(tmp_path, write_nifti):
    vol = load_volume(write_nifti(phantom(), kits_affine((2.5, 0.8, 0.75)), "ct.nii.gz", np.int16))
    target = tmp_path / "x.seg.dcm"
    with pytest.raises(KidneysegError, match="--format dicom-seg needs a DICOM series") as info:
        save_dicom_seg(np.zeros(vol.shape, np.uint8), target, vol)
    assert "\n" not in str(info.value) and not target.exists()


def test_an_empty_prediction_still_makes_a_valid_dicom_seg(tmp_path, capfd):
    import highdicom as hd

    vol = load_volume(write_ct_series(phantom(), tmp_path / "ct"))
    out = save_dicom_seg(np.zeros(vol.shape, np.uint8), tmp_path / "empty.seg.dcm", vol)
    uids = [h.SOPInstanceUID for h in vol.source.dicom.headers]
    back = hd.seg.segread(str(out)).get_pixels_by_source_instance(uids, combine_segments=True)
    assert back.shape == (len(uids), 32, 32) and back.max() == 0
    assert capfd.readouterr().err == ""       # no library log line
