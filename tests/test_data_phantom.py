"""kidneyseg.data.phantom: determinism, anatomy, intensities, a non-trivial task, files on disk."""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from kidneyseg.cli import main
from kidneyseg.data.manifest import case_paths, read_manifest
from kidneyseg.data.phantom import TISSUE_HU, make_phantom, phantom_from_label, write_phantoms
from kidneyseg.io import load_volume, read_header

from .conftest import kits_affine

SEEDS = (0, 1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def phantoms():
    return [make_phantom(s) for s in SEEDS]


def test_deterministic_per_seed():
    a_img, a_lab = make_phantom(7, size=96)
    b_img, b_lab = make_phantom(7, size=96)
    c_img, _ = make_phantom(8, size=96)
    np.testing.assert_array_equal(a_img.array, b_img.array)
    np.testing.assert_array_equal(a_lab.array, b_lab.array)
    assert a_img.affine.tolist() == b_img.affine.tolist()
    assert a_img.shape != c_img.shape or not np.array_equal(a_img.array, c_img.array)


def test_geometry_and_types(phantoms):
    zs = set()
    for img, lab in phantoms:
        assert img.array.dtype == np.float32 and lab.array.dtype == np.uint8
        assert img.shape == lab.shape and img.shape[1:] == (128, 128)
        assert 40 <= img.shape[0] <= 80
        dz, dy, dx = lab.spacing
        assert 0.6 <= dx == dy <= 1.0 and 1.0 <= dz <= 5.0
        assert set(np.unique(lab.array)) <= {0, 1, 2}
        assert np.array_equal(np.rint(img.array), img.array)
        zs.add(dz)
    assert len(zs) >= 3  # spacing variety


def test_two_kidneys_posterior_beside_spine(phantoms):
    for img, lab in phantoms:
        comps, n = ndimage.label(lab.array == 1)
        sizes = np.bincount(comps.ravel())[1:]
        big = np.argsort(sizes)[::-1][:2] + 1
        assert sizes[big[1] - 1] > 0.3 * sizes[big[0] - 1]  # two kidneys of similar size
        cy = [ndimage.center_of_mass(comps == b)[1] for b in big]
        cx = sorted(ndimage.center_of_mass(comps == b)[2] for b in big)
        body = img.array > -500
        body_cy = ndimage.center_of_mass(body)[1]
        assert min(cy) > body_cy  # posterior half of the body
        spine = (img.array > 600).any(axis=(0, 1))  # columns holding bone
        spine_x = np.mean(np.nonzero(spine)[0])
        assert cx[0] < spine_x < cx[1]  # one kidney on each side of the spine


def test_tissue_intensities(phantoms):
    for img, lab in phantoms:
        a = img.array
        kid = np.median(a[lab.array == 1])
        assert 100 < kid < 220
        assert a.min() == -1024 or np.percentile(a, 1) < -900  # air around the body
        ero = ndimage.binary_erosion(lab.array == 1, iterations=1)
        assert np.median(a[ero]) > np.median(a[(lab.array == 0) & (a > -300) & (a < 100)])
    assert TISSUE_HU["kidney_cortex"] > TISSUE_HU["kidney_medulla"] > TISSUE_HU["liver"] > 0


def _best_threshold_dice(images, targets):
    """Best Dice of ``image >= t`` or ``image <= t`` over all integer HU thresholds t (histograms)."""
    a = np.concatenate([i.ravel() for i in images]).astype(np.int64) + 1024
    t = np.concatenate([x.ravel() for x in targets])
    pos = np.bincount(a[t], minlength=4096)[:4096].astype(float)
    allc = np.bincount(a, minlength=4096)[:4096].astype(float)
    nt = pos.sum()
    best = 0.0
    for hits, preds in ((np.cumsum(pos[::-1])[::-1], np.cumsum(allc[::-1])[::-1]),  # image >= t
                        (np.cumsum(pos), np.cumsum(allc))):                          # image <= t
        best = max(best, float(np.max(2 * hits / (preds + nt))))
    return best


def test_task_is_not_trivial(phantoms):
    images = [p[0].array for p in phantoms]
    tumor = _best_threshold_dice(images, [p[1].array == 2 for p in phantoms])
    kidney = _best_threshold_dice(images, [p[1].array > 0 for p in phantoms])
    assert tumor < 0.5, tumor
    assert kidney < 0.85, kidney  # a network must learn shape and context, not a window
    n_tumors = [ndimage.label(make_phantom(s, size=64)[1].array == 2)[1] for s in range(30)]
    assert set(n_tumors) >= {0, 1, 2}


def test_some_tumors_touch_the_kidney_edge():
    touching = exophytic = 0
    for s in range(10):
        _, lab = make_phantom(s)
        t = lab.array == 2
        if not t.any():
            continue
        # Exophytic: tumor voxels that border background directly.
        border = ndimage.binary_dilation(lab.array == 0) & t
        exophytic += bool(border.any())
        touching += bool((ndimage.binary_dilation(t) & (lab.array == 1)).any())
    assert exophytic >= 2 and touching >= 5


def test_options_are_checked():
    with pytest.raises(ValueError, match="unknown phantom option.*valid options are"):
        make_phantom(0, sise=96)
    with pytest.raises(ValueError, match="size must be"):
        make_phantom(0, size=8)
    img, _ = make_phantom(0, size=64, slices=(20, 24), spacing_z=(2.0,))
    assert img.shape[1:] == (64, 64) and img.spacing[0] == 2.0 and 20 <= img.shape[0] <= 24


def test_write_phantoms_cli_layout_and_speed(tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["phantom", str(tmp_path / "ph"), "--cases", "8", "--seed", "3", "--no-progress"]) == 0
    seconds = time.perf_counter() - t0
    assert seconds < 30, seconds  # measured ~2.5 s on 2 shared cores
    path = tmp_path / "ph" / "manifest.csv"
    df = read_manifest(path)
    assert len(df) == 8 and df.has_image.all() and (df.split == "val").sum() == 1
    assert not df.excluded.any() and (df.kidney_ml > 0).all()
    image, label = case_paths(df.iloc[2], path)
    img, lab = load_volume(image), load_volume(label, kind="label")
    ref_img, ref_lab = make_phantom((3, 2))
    np.testing.assert_array_equal(img.array, ref_img.array)
    np.testing.assert_array_equal(lab.array, ref_lab.array)
    assert np.allclose(nib.load(str(image)).affine, kits_affine(lab.spacing), atol=1e-5)
    assert nib.load(str(image)).get_data_dtype() == np.int16
    has_tumor = df.tumor_ml > 0
    assert (df.tumor_size_cm.notna() == has_tumor).all()


def test_from_labels_keeps_geometry(tmp_path, write_nifti):
    lab = np.zeros((10, 64, 72), np.uint8)
    lab[3:8, 30:44, 8:22] = 1
    lab[3:8, 30:44, 50:64] = 1
    lab[4:6, 32:36, 10:14] = 2
    aff = kits_affine((2.5, 0.7, 0.7))
    aff[:3, 3] = (12.0, -30.0, 7.0)
    write_nifti(lab, aff, "src/case_00042/segmentation.nii.gz", np.uint8)
    path = write_phantoms(tmp_path / "out", 0, seed=1, from_labels=tmp_path / "src", progress=False)
    df = read_manifest(path)
    assert df.case_id.tolist() == ["case_00042"]
    image, label = case_paths(df.iloc[0], path)
    assert np.allclose(nib.load(str(image)).affine, aff) and np.allclose(nib.load(str(label)).affine, aff)
    np.testing.assert_array_equal(load_volume(label, kind="label").array, lab)
    img = load_volume(image).array
    assert img.shape == lab.shape
    assert np.median(img[lab == 1]) > 100 and np.percentile(img, 1) < -900


def test_from_real_label(kits19_dir):
    label = load_volume(kits19_dir / "case_00061" / "segmentation.nii.gz", kind="label")  # 29 slices
    image = phantom_from_label(label, seed=0)
    assert image.shape == label.shape and np.allclose(image.affine, label.affine)
    a, lab = image.array, label.array
    assert 100 < np.median(a[lab == 1]) < 220
    assert np.percentile(a, 1) < -900 and (a > 600).any()  # air and bone present
    assert read_header(kits19_dir / "case_00061" / "segmentation.nii.gz").shape == image.shape


def test_phantom_bad_arguments(tmp_path, capsys):
    assert main(["phantom", str(tmp_path / "x"), "--from-labels", str(tmp_path / "none")]) == 2
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="n_cases must be"):
        write_phantoms(tmp_path / "y", 0)
