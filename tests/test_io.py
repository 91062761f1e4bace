"""kidneyseg.io: canonical layout, exact round trips, clear errors."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from kidneyseg.errors import KidneysegError
from kidneyseg.io import load_volume, read_header, save_like, save_volume

from .conftest import kits_affine, tiny_label

RAS_AFFINE = np.array([[0.7, 0, 0, -100], [0, 0.7, 0, -120], [0, 0, 2.5, 30], [0, 0, 0, 1]], float)


def test_kits_layout_loads_without_reordering(write_nifti):
    lab = tiny_label()
    path = write_nifti(lab, kits_affine((3.0, 0.8, 0.75)), "seg.nii.gz", np.uint8)
    vol = load_volume(path, kind="label")
    assert vol.array.shape == lab.shape
    np.testing.assert_array_equal(vol.array, lab)
    assert vol.spacing == pytest.approx((3.0, 0.8, 0.75))
    hdr = read_header(path)
    assert hdr.shape == lab.shape and hdr.spacing == pytest.approx((3.0, 0.8, 0.75))


def test_ras_file_loads_into_same_canonical_layout(write_nifti):
    lab = tiny_label()                                # canonical (z: I, y: P, x: L)
    # The same anatomy stored RAS: array (x, y, z) with x->R, y->A, z->S.
    ras = lab[::-1, ::-1, ::-1].transpose(2, 1, 0)
    aff = RAS_AFFINE.copy()
    aff[:3, :3] = np.diag([0.75, 0.8, 3.0])
    path = write_nifti(ras, aff, "ras.nii.gz", np.uint8)
    vol = load_volume(path, kind="label")
    np.testing.assert_array_equal(vol.array, lab)
    assert vol.spacing == pytest.approx((3.0, 0.8, 0.75))
    assert read_header(path).shape == lab.shape


@pytest.mark.parametrize("affine", [kits_affine((5.0, 0.7, 0.7)), RAS_AFFINE], ids=["kits-5mm", "ras"])
def test_round_trip_restores_shape_affine_and_voxels(write_nifti, tmp_path, affine):
    rng = np.random.default_rng(0)
    img = rng.integers(-1024, 1500, size=(9, 14, 11)).astype(np.int16)
    path = write_nifti(img, affine, "ct.nii.gz", np.int16)
    vol = load_volume(path, kind="image")
    out = save_volume(vol, tmp_path / "back.nii.gz", kind="image")
    back = nib.load(str(out))
    assert back.shape == img.shape
    np.testing.assert_array_equal(back.affine, nib.load(str(path)).affine)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), img)

    lab = tiny_label((9, 14, 11))
    lpath = write_nifti(lab, affine, "lab.nii.gz", np.uint8)
    lvol = load_volume(lpath, kind="label")
    lout = save_like(lvol.array, tmp_path / "lab_back.nii.gz", lvol)
    lback = nib.load(str(lout))
    assert lback.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(lback.dataobj), lab)
    np.testing.assert_array_equal(lback.affine, nib.load(str(lpath)).affine)


def test_singleton_4th_axis_accepted_other_4d_refused(write_nifti):
    lab = tiny_label()[..., None]
    vol = load_volume(write_nifti(lab, kits_affine((1, 1, 1)), "a.nii.gz", np.uint8), kind="label")
    assert vol.array.ndim == 3
    with pytest.raises(KidneysegError, match="expected a 3D volume, got 4D"):
        load_volume(write_nifti(np.zeros((4, 5, 6, 2), np.uint8), np.eye(4), "b.nii.gz"), kind="label")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: p.write_bytes(b"hello, not nifti at all" * 20), "NIfTI"),
        (lambda p: p.write_bytes(gzip.compress(b"\x00" * 400)[:60]), "NIfTI|corrupt|truncated"),
    ],
    ids=["empty", "not-nifti", "corrupt-gzip"],
)
def test_bad_files_give_one_line_errors(tmp_path, make, match):
    path = tmp_path / "bad.nii.gz"
    make(path)
    with pytest.raises(KidneysegError, match=match) as info:
        load_volume(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg


def test_label_value_7_and_2d_and_missing(write_nifti, tmp_path):
    lab = tiny_label()
    lab[0, 0, 0] = 7
    with pytest.raises(KidneysegError, match=r"label values must be in \{0, 1, 2\}, found \[7\]"):
        load_volume(write_nifti(lab, np.eye(4), "seven.nii.gz", np.uint8), kind="label")
    with pytest.raises(KidneysegError, match="expected a 3D volume, got 2D"):
        load_volume(write_nifti(np.zeros((5, 6), np.uint8), np.eye(4), "flat.nii.gz"), kind="label")
    with pytest.raises(KidneysegError, match="no such file"):
        load_volume(tmp_path / "missing.nii.gz")


def test_truncated_voxel_data(write_nifti):
    path = write_nifti(np.random.default_rng(1).normal(size=(20, 30, 30)).astype(np.float32) * 300,
                       np.eye(4), "t.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(KidneysegError, match="corrupt|truncated"):
        load_volume(path)


def test_nan_image_and_zero_spacing(write_nifti):
    arr = np.full((4, 5, 6), -1000.0, np.float32)
    arr[0, 0, 1] = 100
    arr[1, 1, 1] = np.nan
    with pytest.raises(KidneysegError, match="NaN or Inf"):
        load_volume(write_nifti(arr, np.eye(4), "nan.nii.gz"))
    path = write_nifti(np.where(np.isnan(arr), 0, arr), np.eye(4), "zero.nii.gz")
    img = nib.load(str(path))
    aff = np.eye(4)
    aff[2, 2] = 0  # nibabel refuses to build such an affine, so write it into the sform directly
    img.header.set_sform(aff, code=1)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), None, header=img.header), str(path))
    with pytest.raises(KidneysegError, match="spacing must be positive"):
        load_volume(path)


def test_save_is_atomic_on_failure(tmp_path):
    vol = load_volume  # noqa: F841 (keeps the import used)
    from kidneyseg.io import new_volume

    v = new_volume(tiny_label(), (1.0, 1.0, 1.0))
    target = tmp_path / "out.nii.gz"
    save_like(v.array, target, v)
    before = target.read_bytes()
    with pytest.raises(ValueError):
        save_like(np.zeros((2, 2, 2), np.uint8), target, v)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]


@pytest.mark.parametrize("view", ["fortran", "flipped", "permuted", "c"])
def test_c_order_copies_any_layout_exactly(view):
    """The tiled transpose used on every load gives np.ascontiguousarray's values for any strides,
    including shapes that are not multiples of the tile."""
    from kidneyseg.io.volume import c_order

    a = np.arange(70 * 33 * 45, dtype=np.float32).reshape(70, 33, 45)
    v = {"fortran": np.asfortranarray(a), "flipped": a[::-1, :, ::-2], "permuted": a.transpose(2, 0, 1),
         "c": a}[view]
    out = c_order(v, tile=16)
    assert out.flags.c_contiguous and out.dtype == v.dtype
    np.testing.assert_array_equal(out, np.ascontiguousarray(v))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.uint16])
def test_label_check_fast_path_agrees_with_the_full_check(dtype):
    """The O(n) min/max path accepts exactly what the np.unique check accepts, for KiTS19's
    {0, 1, 2}, KiTS23's {0, 1, 2, 3} and a set with a gap, where it must fall back to np.unique."""
    from kidneyseg.io.volume import check_label_values

    ok = np.array([0, 1, 2, 2, 0], dtype)
    assert check_label_values("x", ok).dtype == np.uint8
    np.testing.assert_array_equal(check_label_values("x", ok), ok)
    assert check_label_values("x", np.array([0, 3, 1], dtype), (0, 1, 2, 3)).tolist() == [0, 3, 1]
    with pytest.raises(KidneysegError, match=r"found \[3\]"):
        check_label_values("x", np.array([0, 3, 1], dtype))
    with pytest.raises(KidneysegError, match=r"found \[2\]"):          # 2 lies between 0 and 3 but is not valid
        check_label_values("x", np.array([0, 2, 3], dtype), (0, 1, 3))
    if np.issubdtype(dtype, np.signedinteger):
        with pytest.raises(KidneysegError, match=r"found \[-1\]"):
            check_label_values("x", np.array([0, -1, 2], dtype))
