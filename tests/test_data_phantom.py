"""kidneyseg.data.phantom: determinism, realistic scale, anatomy, intensities, a non-trivial task,
slab streaming without seams, parallel and resumable painting, files on disk."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from kidneyseg.cli import main
from kidneyseg.data.manifest import case_paths, read_manifest
from kidneyseg.data.phantom import (TISSUE_HU, PhantomOptions, case_seed, make_case, make_phantom, paint_ct,
                                    phantom_from_label, synthetic_scene, write_phantoms)
from kidneyseg.data.phantom import batch, tumor_sizes
from kidneyseg.io import load_volume, new_volume, read_header

from .conftest import ROOT, kits_affine

SEEDS = (0, 1, 2, 3, 4, 5)
SIZE = 128  # ~3 mm in-plane: the body keeps its real size, the grid is coarse (fast tests)


@pytest.fixture(scope="module")
def phantoms():
    return [make_phantom(s, size=SIZE) for s in SEEDS]


def _body_width_mm(img, lab) -> float:
    """Skin-to-skin width (mm) of the body on the kidneys' middle slice (the table is separate)."""
    z = int(np.nonzero((lab.array > 0).any(axis=(1, 2)))[0].mean())
    comps, n = ndimage.label(img.array[z] > -400)
    body = comps == (np.argmax(np.bincount(comps.ravel())[1:]) + 1)
    cols = np.nonzero(body.any(axis=0))[0]
    return (cols[-1] - cols[0] + 1) * lab.spacing[2]


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
        assert img.shape == lab.shape and img.shape[1:] == (SIZE, SIZE)
        dz, dy, dx = lab.spacing
        assert dx == dy and 1.0 <= dz <= 5.0
        assert set(np.unique(lab.array)) <= {0, 1, 2}
        assert np.array_equal(np.rint(img.array), img.array)
        zs.add(dz)
    assert len(zs) >= 3  # spacing variety


def test_realistic_scale_at_512():
    """A default case: a CT's 512 x 512 matrix at KiTS-like spacing holding a 30-40 cm abdomen."""
    t0 = time.perf_counter()
    img, lab = make_phantom(4)
    seconds = time.perf_counter() - t0
    assert img.shape[1:] == (512, 512) and 0.55 <= lab.spacing[1] <= 0.95
    assert 300 <= _body_width_mm(img, lab) <= 410
    kidney_ml = (lab.array > 0).sum() * np.prod(lab.spacing) / 1000
    assert 200 < kidney_ml < 700  # two adult kidneys (+ tumor)
    assert seconds < 30, seconds  # a few seconds on a quiet machine


def test_body_width_and_variety_across_seeds(phantoms):
    widths = [_body_width_mm(i, l) for i, l in phantoms]
    assert all(290 <= w <= 410 for w in widths), widths
    assert np.std(widths) > 8, widths
    kx = [ndimage.center_of_mass(l.array > 0)[2] * l.spacing[2] - l.shape[2] * l.spacing[2] / 2 for _, l in phantoms]
    assert np.std(kx) > 1.0  # the kidneys do not sit at the same place
    phases = {synthetic_scene(s, PhantomOptions.from_kwargs(size=48))[1].app.phase for s in range(12)}
    assert phases == {"corticomedullary", "nephrographic"}


def test_two_kidneys_posterior_beside_spine(phantoms):
    for img, lab in phantoms:
        comps, n = ndimage.label(lab.array == 1)
        sizes = np.bincount(comps.ravel())[1:]
        big = np.argsort(sizes)[::-1][:2] + 1
        assert sizes[big[1] - 1] > 0.3 * sizes[big[0] - 1]  # two kidneys of similar size
        cy = [ndimage.center_of_mass(comps == b)[1] for b in big]
        cx = sorted(ndimage.center_of_mass(comps == b)[2] for b in big)
        z = int(np.nonzero((lab.array > 0).any(axis=(1, 2)))[0].mean())
        body = ndimage.binary_fill_holes(img.array[z] > -400)
        body_cy = ndimage.center_of_mass(body)[0]
        assert min(cy) > body_cy  # posterior half of the body
        spine = (img.array > 500).any(axis=(0, 1))  # columns holding bone
        spine_x = np.median(np.nonzero(spine)[0])
        assert cx[0] < spine_x < cx[1]  # one kidney on each side of the spine


def test_tissue_intensities(phantoms):
    for img, lab in phantoms:
        a = img.array
        assert 100 < np.median(a[lab.array == 1]) < 260
        assert np.percentile(a, 1) < -900  # air around the body
        fat = (a > -200) & (a < -50)
        assert fat.mean() > 0.03  # subcutaneous and visceral fat
        assert (a > 500).sum() > 100  # bone
    assert TISSUE_HU["kidney_cortex"] > TISSUE_HU["kidney_medulla"] > 0 > TISSUE_HU["visceral_fat"]


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
    """The difficulty floor: no single HU window finds the tumors (or the kidneys)."""
    images = [p[0].array for p in phantoms]
    tumor = _best_threshold_dice(images, [p[1].array == 2 for p in phantoms])
    kidney = _best_threshold_dice(images, [p[1].array > 0 for p in phantoms])
    assert tumor < 0.5, tumor
    assert kidney < 0.85, kidney  # a network must learn shape and context, not a window
    n_tumors = [ndimage.label(make_phantom(s, size=48)[1].array == 2)[1] for s in range(30)]
    assert set(n_tumors) >= {0, 1, 2}


def test_tumors_endophytic_and_exophytic_of_kits_sizes():
    """Some tumors lie inside the parenchyma, some bulge out of it; diameters follow KiTS19."""
    endo = exo = 0
    diameters = []
    for s in range(16):
        _, lab, diam = make_case(s, PhantomOptions.from_kwargs(size=128, tumor_counts=(0.0, 1.0, 0.0)))
        diameters.append(diam)
        t = lab.array == 2
        if not t.any():
            continue
        border = ndimage.binary_dilation(t) & ~t
        outside = float((lab.array[border] == 0).mean())  # share of the tumor's border on background
        endo += outside < 0.15
        exo += outside > 0.5
    assert exo >= 3 and endo >= 3, (exo, endo)
    assert min(diameters) < 3 and max(diameters) > 5, diameters
    rng = np.random.default_rng(0)
    drawn = [tumor_sizes.draw_diameter_cm(rng) for _ in range(3000)]
    assert 3.6 < np.median(drawn) < 4.4 and np.percentile(drawn, 95) > 9  # KiTS19: median 4.0, 95 % 11.5 cm


@pytest.mark.kits19
def test_shipped_tumor_sizes_match_kits19(kits19_dir):
    assert tumor_sizes.size_table(kits19_dir / "kits.json") == tumor_sizes.shipped_table()


def test_options_are_checked():
    with pytest.raises(ValueError, match="unknown phantom option.*valid options are"):
        make_phantom(0, sise=96)
    with pytest.raises(ValueError, match="size must be"):
        make_phantom(0, size=8)
    with pytest.raises(ValueError, match="phases must be"):
        make_phantom(0, size=48, phases=(0.5, 0.2))
    with pytest.raises(ValueError, match="unknown phantom option"):
        make_phantom(0, size=48, cysts=2)  # cysts come with dataset="kits23" (cyst_counts)
    with pytest.raises(ValueError, match="unknown dataset .kits21."):
        make_phantom(0, size=48, dataset="kits21")
    with pytest.raises(ValueError, match="cyst_counts must be"):
        make_phantom(0, size=48, dataset="kits23", cyst_counts=(0.5, 0.2))
    img, lab = make_phantom(0, size=64, slices=(20, 24), spacing_z=(2.0,), spacing_xy=(2.5, 2.5))
    assert img.shape[1:] == (64, 64) and img.spacing[0] == 2.0 and 20 <= img.shape[0] <= 24
    assert img.spacing[1] == pytest.approx(2.5) and (lab.array > 0).any()  # field of view on the kidneys


def test_slabs_have_no_seams():
    """Rendering slab by slab (blur halo, per-slice noise) equals rendering in one piece."""
    _, scene, _ = synthetic_scene(3, PhantomOptions.from_kwargs(size=64, spacing_z=(2.0,)))
    assert scene.halo >= 1
    whole = scene.render_all(slab=10**6)
    for slab in (1, 7):
        np.testing.assert_array_equal(scene.render_all(slab=slab), whole)


def _label_folder(root: Path, write_nifti, names=("case_00042",)) -> Path:
    lab = np.zeros((18, 64, 72), np.uint8)
    lab[3:14, 30:44, 8:22] = 1
    lab[3:14, 30:44, 50:64] = 1
    lab[5:9, 32:36, 10:14] = 2
    for i, name in enumerate(names):
        aff = kits_affine((2.5, 3.0, 3.0))
        aff[:3, 3] = (12.0, -30.0, 7.0 + i)
        write_nifti(np.roll(lab, i, axis=0), aff, f"src/{name}/segmentation.nii.gz", np.uint8)
    return root / "src"


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.nii.gz"))}


def test_from_labels_keeps_geometry_and_matches_one_shot_painting(tmp_path, write_nifti):
    src = _label_folder(tmp_path, write_nifti)
    path = write_phantoms(tmp_path / "out", 0, seed=1, from_labels=src, progress=False)
    df = read_manifest(path)
    assert df.case_id.tolist() == ["case_00042"]
    image, label = case_paths(df.iloc[0], path)
    aff = nib.load(str(src / "case_00042" / "segmentation.nii.gz")).affine
    assert np.allclose(nib.load(str(image)).affine, aff) and np.allclose(nib.load(str(label)).affine, aff)
    assert label.read_bytes() == (src / "case_00042" / "segmentation.nii.gz").read_bytes()  # copied as is
    assert nib.load(str(image)).get_data_dtype() == np.int16
    src_lab = load_volume(src / "case_00042" / "segmentation.nii.gz", kind="label")
    img = load_volume(image).array
    # The streamed, slab-by-slab file equals painting the whole label in memory with the case's seed.
    np.testing.assert_array_equal(img, phantom_from_label(src_lab, case_seed(1, "case_00042")).array)
    np.testing.assert_array_equal(img, paint_ct(src_lab.array, src_lab.spacing, case_seed(1, "case_00042"),
                                                noise_hu=None))
    assert np.median(img[src_lab.array == 1]) > 100 and np.percentile(img, 1) < -900


def test_workers_do_not_change_the_files(tmp_path, write_nifti):
    src = _label_folder(tmp_path, write_nifti, names=("case_00001", "case_00002", "case_00003"))
    write_phantoms(tmp_path / "one", 0, seed=2, from_labels=src, progress=False, workers=1)
    write_phantoms(tmp_path / "two", 0, seed=2, from_labels=src, progress=False, workers=2)
    one, two = _hashes(tmp_path / "one"), _hashes(tmp_path / "two")
    assert len(one) == 6 and one == two
    write_phantoms(tmp_path / "s1", 3, seed=2, progress=False, workers=1, size=48)
    write_phantoms(tmp_path / "s2", 3, seed=2, progress=False, workers=2, size=48)
    assert _hashes(tmp_path / "s1") == _hashes(tmp_path / "s2")


def test_resume_skips_finished_cases_and_redoes_broken_ones(tmp_path, write_nifti, monkeypatch):
    src = _label_folder(tmp_path, write_nifti, names=("case_00001", "case_00002"))
    out = tmp_path / "out"
    write_phantoms(out, 0, seed=0, from_labels=src, progress=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("imaging.nii.gz")}
    reference = _hashes(out)
    # A killed run: case 2's image never renamed into place (only a temporary file left).
    (out / "case_00002" / "imaging.nii.gz").rename(out / "case_00002" / ".imaging.nii.gz.x.part.nii.gz")
    calls = []
    real = batch.painted_scene
    monkeypatch.setattr(batch, "painted_scene", lambda *a, **k: calls.append(1) or real(*a, **k))
    write_phantoms(out, 0, seed=0, from_labels=src, progress=False)
    assert len(calls) == 1  # only the broken case was painted again
    assert (out / "case_00001" / "imaging.nii.gz").stat().st_mtime_ns == before[out / "case_00001" / "imaging.nii.gz"]
    assert _hashes(out) == reference  # the killed run's temporary file is gone too
    # Another seed is another request: every case is made again.
    calls.clear()
    write_phantoms(out, 0, seed=5, from_labels=src, progress=False)
    assert len(calls) == 2


def test_failed_write_leaves_no_complete_looking_case(tmp_path, write_nifti, monkeypatch):
    src = _label_folder(tmp_path, write_nifti)
    out = tmp_path / "out"

    def boom(*args, **kwargs):
        raise RuntimeError("killed while painting")

    monkeypatch.setattr(batch, "write_painted", boom)
    with pytest.raises(RuntimeError, match="killed"):
        write_phantoms(out, 0, seed=0, from_labels=src, progress=False)
    case = out / "case_00042"
    assert not (case / "imaging.nii.gz").exists() and not (case / batch.MARKER).exists()
    assert batch._done(case, {"anything": 1}) is None
    monkeypatch.undo()
    write_phantoms(out, 0, seed=0, from_labels=src, progress=False)
    assert (case / "imaging.nii.gz").exists() and (case / batch.MARKER).exists()


def test_write_phantoms_cli_layout_and_speed(tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["phantom", str(tmp_path / "ph"), "--cases", "6", "--seed", "3", "--size", "96", "--workers", "1",
                 "--no-progress"]) == 0
    seconds = time.perf_counter() - t0
    assert seconds < 60, seconds
    path = tmp_path / "ph" / "manifest.csv"
    df = read_manifest(path)
    assert len(df) == 6 and df.has_image.all() and (df.split == "val").sum() == 1
    assert not df.excluded.any() and (df.kidney_ml > 0).all()
    image, label = case_paths(df.iloc[2], path)
    img, lab = load_volume(image), load_volume(label, kind="label")
    ref_img, ref_lab = make_phantom((3, 2), size=96)
    np.testing.assert_array_equal(img.array, ref_img.array)
    np.testing.assert_array_equal(lab.array, ref_lab.array)
    assert np.allclose(nib.load(str(image)).affine, kits_affine(lab.spacing), atol=1e-5)
    assert nib.load(str(image)).get_data_dtype() == np.int16
    has_tumor = df.tumor_ml > 0
    assert (df.tumor_size_cm.notna() == has_tumor).all()


def test_from_real_label(kits19_dir):
    label = load_volume(kits19_dir / "case_00061" / "segmentation.nii.gz", kind="label")  # 29 slices
    image = phantom_from_label(label, seed=0)
    assert image.shape == label.shape and np.allclose(image.affine, label.affine)
    a, lab = image.array, label.array
    assert 100 < np.median(a[lab == 1]) < 260
    assert np.percentile(a, 1) < -900 and (a > 600).any()  # air and bone present
    assert read_header(kits19_dir / "case_00061" / "segmentation.nii.gz").shape == image.shape


def test_phantom_bad_arguments(tmp_path, capsys, write_nifti):
    assert main(["phantom", str(tmp_path / "x"), "--from-labels", str(tmp_path / "none")]) == 2
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="n_cases must be"):
        write_phantoms(tmp_path / "y", 0)
    bad = np.zeros((8, 16, 16), np.uint8)
    bad[2, 2, 2] = 7
    write_nifti(bad, kits_affine((2.0, 1.0, 1.0)), "bad/case_00000/segmentation.nii.gz", np.uint8)
    assert main(["phantom", str(tmp_path / "z"), "--from-labels", str(tmp_path / "bad"), "--workers", "1",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "segmentation.nii.gz" in err and "label values" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "z" / "case_00000" / "imaging.nii.gz").exists()


def test_empty_label_still_paints_a_body(tmp_path):
    lab = new_volume(np.zeros((6, 40, 40), np.uint8), (5.0, 8.0, 8.0))
    img = phantom_from_label(lab, seed=0).array
    assert img.shape == (6, 40, 40) and np.percentile(img, 1) < -900 and (img > -200).mean() > 0.2


RSS_CHILD = """
import subprocess, sys, time, json, psutil
p = subprocess.Popen(sys.argv[1:])
proc, peak = psutil.Process(p.pid), 0
while p.poll() is None:
    try:
        peak = max(peak, sum(q.memory_info().rss for q in [proc] + proc.children(recursive=True)))
    except psutil.Error:
        pass
    time.sleep(0.05)
print("JSON " + json.dumps({"rc": p.returncode, "peak_gib": peak / 2 ** 30}))
"""


@pytest.mark.slow
@pytest.mark.kits19
def test_largest_case_paints_under_4_gib(kits19_dir, tmp_path):
    """case_00151 (1059 x 512 x 512, the largest KiTS19 label) painted by the CLI with 2 workers
    (with a second case beside it): the process tree's peak RSS stays under 4 GiB."""
    src = tmp_path / "src"
    for case in ("case_00151", "case_00061"):
        (src / case).mkdir(parents=True)
        (src / case / "segmentation.nii.gz").symlink_to(kits19_dir / case / "segmentation.nii.gz")
    cmd = [sys.executable, "-c", RSS_CHILD, sys.executable, "-m", "kidneyseg", "phantom", str(tmp_path / "out"),
           "--from-labels", str(src), "--workers", "2", "--no-progress"]
    p = subprocess.run(["flock", "-w", "1200", "/tmp/kidneyseg-heavy.lock", *cmd] if shutil.which("flock") else cmd,
                       capture_output=True, text=True, timeout=2400, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("JSON ")][-1][5:])
    print(res)
    assert res["rc"] == 0 and res["peak_gib"] < 4.0, res
    out = nib.load(str(tmp_path / "out" / "case_00151" / "imaging.nii.gz"))
    ref = nib.load(str(kits19_dir / "case_00151" / "segmentation.nii.gz"))
    assert out.shape == ref.shape == (1059, 512, 512) and np.allclose(out.affine, ref.affine)
    assert out.get_data_dtype() == np.int16
