"""The kits23 evaluation protocol against an independent implementation, on real KiTS23 label maps.

The reference implementation below is written from the KiTS23 challenge's definition
(``kits23/evaluation/metrics.py`` of the official starter code, which calls DeepMind's
``surface-distance``), independently of kidneyseg's code path:

* files are read with SimpleITK (the challenge's reader; numpy axes reversed against nibabel's,
  spacing from ``GetSpacing()`` reversed), regions built with ``np.isin``;
* a surface element is a 2x2x2 cube of voxel centres that the surface crosses. Its area comes from
  ONE marching-cubes mesh of the whole (cropped, padded) mask, each triangle binned into the cube
  holding its centroid. DeepMind's table triangulates a cube's minority corners (classic marching
  cubes of the code, or of its complement when more than 4 corners are inside), so cubes with
  more than 4 inside corners take their area from the mesh of the complement;
* distances from each surface element to the other surface come from a k-d tree over the other
  surface's cube positions (mm), not from a distance transform;
* both masks empty -> 1, exactly one empty -> 0, for Dice and surface Dice.

kidneyseg's ``kidneyseg evaluate --protocol kits23`` must agree to 1e-6 on every pair: real label
maps and perturbed copies (erosion, dilation, a shifted tumor, a cyst relabelled as tumor, emptied
regions).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from kidneyseg.cli import main
from kidneyseg.data.datasets import KITS23
from kidneyseg.errors import KidneysegError
from kidneyseg.evaluate import protocols
from kidneyseg.evaluate.protocols import get_protocol, kits23_case_metrics
from kidneyseg.evaluate.report import evaluate_folders

from .conftest import ROOT, kits_affine

KITS23_DIR = ROOT.parent / "shared" / "kits23"
#: The challenge's regions and tolerances, typed in from kits23/configuration/labels.py.
OFFICIAL = (("kidney_and_masses", (1, 2, 3), 1.0330772532390826), ("masses", (2, 3), 1.1328796488598762),
            ("tumor", (2,), 1.1498198361434828))
#: Small real cases holding kidney, tumor and cyst (38, 53 and 102 slices; 5, 5 and 2.5 mm).
CASES = ("case_00152", "case_00064", "case_00444")


# ------------------------------------------------------------------------------ the reference
def _surfels(mask: np.ndarray, spacing: np.ndarray):
    """(cube positions in mm, cube areas in mm²) of a padded boolean mask's surface."""
    from skimage.measure import marching_cubes

    # number of inside corners of every 2x2x2 cube (cube (i, j, k) has corners i..i+1, ...)
    m = mask.astype(np.int16)
    corners = sum(m[a:a + m.shape[0] - 1, b:b + m.shape[1] - 1, c:c + m.shape[2] - 1]
                  for a in (0, 1) for b in (0, 1) for c in (0, 1))
    area = np.zeros(corners.shape)
    for volume, take in ((mask, corners <= 4), (~mask, corners > 4)):
        verts, faces, _, _ = marching_cubes(volume.astype(np.float32), 0.5, method="lorensen")
        tri = verts.astype(np.float64)[faces]  # index space: exact half-integers
        centroid = tri.mean(axis=1)
        cube = np.floor(centroid).astype(int)
        assert not np.any(np.isclose(centroid, np.round(centroid))), "a triangle lies on a cube face"
        mm = tri * spacing  # vertices in mm, then the triangle areas
        a = 0.5 * np.linalg.norm(np.cross(mm[:, 1] - mm[:, 0], mm[:, 2] - mm[:, 0]), axis=1)
        per_cube = np.zeros(corners.shape)
        np.add.at(per_cube, tuple(cube.T), a)
        area[take] = per_cube[take]
    surface = (corners > 0) & (corners < 8)
    idx = np.argwhere(surface)
    return idx * spacing, area[surface]


def _reference_scores(pred: np.ndarray, gt: np.ndarray, spacing, tolerance: float) -> tuple[float, float]:
    if not pred.any() and not gt.any():
        return 1.0, 1.0
    if not pred.any() or not gt.any():
        return 0.0, 0.0
    dice = 2.0 * np.logical_and(pred, gt).sum() / (pred.sum() + gt.sum())
    both = np.argwhere(pred | gt)
    lo, hi = both.min(0), both.max(0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sp = np.asarray(spacing, np.float64)
    p_pos, p_area = _surfels(np.pad(pred[box], 1), sp)
    g_pos, g_area = _surfels(np.pad(gt[box], 1), sp)
    d_pg = cKDTree(g_pos).query(p_pos)[0]
    d_gp = cKDTree(p_pos).query(g_pos)[0]
    sd = (p_area[d_pg <= tolerance].sum() + g_area[d_gp <= tolerance].sum()) / (p_area.sum() + g_area.sum())
    return float(dice), float(sd)


def reference_kits23(pred_path: Path, gt_path: Path) -> dict[str, float]:
    """The challenge's per-case metrics, computed the reference way (see the module docstring)."""
    import SimpleITK as sitk

    p_img, g_img = sitk.ReadImage(str(pred_path)), sitk.ReadImage(str(gt_path))
    pred, gt = sitk.GetArrayFromImage(p_img), sitk.GetArrayFromImage(g_img)
    spacing = p_img.GetSpacing()[::-1]
    out = {}
    for name, labels, tol in OFFICIAL:
        out[f"{name}_dice"], out[f"{name}_surface_dice"] = _reference_scores(
            np.isin(pred, labels), np.isin(gt, labels), spacing, tol)
    return out


# ------------------------------------------------------------------------------- perturbations
def _perturbations(gt: np.ndarray) -> dict[str, np.ndarray]:
    fg = gt > 0
    out = {"identity": gt.copy()}
    eroded = gt.copy()
    eroded[~ndimage.binary_erosion(fg, iterations=1)] = 0
    out["erosion"] = eroded
    dilated = gt.copy()
    dilated[ndimage.binary_dilation(fg, iterations=2) & ~fg] = 1
    out["dilation"] = dilated
    shifted = gt.copy()
    shifted[gt == 2] = 1
    shifted[np.roll(gt == 2, 3, axis=2) & fg] = 2
    out["shifted_tumor"] = shifted
    relabelled = gt.copy()
    relabelled[gt == 3] = 2
    out["cyst_as_tumor"] = relabelled
    no_masses = gt.copy()
    no_masses[gt >= 2] = 1
    out["masses_emptied"] = no_masses  # masses and tumor: one empty -> 0
    return out


@pytest.fixture(scope="module")
def real_pairs(tmp_path_factory):
    """Folders pred/ and gt/ of real KiTS23 label maps and their perturbed copies."""
    import nibabel as nib

    if not all((KITS23_DIR / c / "segmentation.nii.gz").exists() for c in CASES):
        pytest.skip(f"real KiTS23 labels not found at {KITS23_DIR}")
    root = tmp_path_factory.mktemp("kits23_pairs")
    for case in CASES:
        img = nib.load(str(KITS23_DIR / case / "segmentation.nii.gz"))
        gt = np.asarray(img.dataobj).astype(np.uint8)
        for name, pred in _perturbations(gt).items():
            cid = f"{case}_{name}"
            (root / "gt").mkdir(exist_ok=True)
            (root / "pred").mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(gt, img.affine, img.header), str(root / "gt" / f"{cid}.nii.gz"))
            nib.save(nib.Nifti1Image(pred, img.affine, img.header), str(root / "pred" / f"{cid}.nii.gz"))
        # both empty: tumor removed from reference and prediction
        none = gt.copy()
        none[gt == 2] = 1
        cid = f"{case}_no_tumor_anywhere"
        nib.save(nib.Nifti1Image(none, img.affine, img.header), str(root / "gt" / f"{cid}.nii.gz"))
        nib.save(nib.Nifti1Image(none, img.affine, img.header), str(root / "pred" / f"{cid}.nii.gz"))
    return root


@pytest.mark.slow
def test_kits23_protocol_agrees_with_the_reference_on_real_label_maps(real_pairs, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["evaluate", "--pred", str(real_pairs / "pred"), "--gt", str(real_pairs / "gt"),
                 "--protocol", "kits23", "--json", str(out), "--csv", str(tmp_path / "m.csv"), "--no-progress"]) == 0
    assert "protocol kits23" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["protocol"] == "kits23" and len(doc["cases"]) == len(CASES) * 7
    worst = 0.0
    for row in doc["cases"]:
        cid = row["case_id"]
        ref = reference_kits23(real_pairs / "pred" / f"{cid}.nii.gz", real_pairs / "gt" / f"{cid}.nii.gz")
        for key, value in ref.items():
            worst = max(worst, abs(row[key] - value))
            assert row[key] == pytest.approx(value, abs=1e-6), (cid, key)
    assert worst < 1e-6
    print(f"kits23 protocol vs reference: {len(doc['cases'])} pairs, largest difference {worst:.3g}")
    rows = {r["case_id"]: r for r in doc["cases"]}
    for case in CASES:
        ident = rows[f"{case}_identity"]
        assert all(ident[f"{n}_dice"] == 1.0 and ident[f"{n}_surface_dice"] == 1.0 for n, _, _ in OFFICIAL)
        emptied = rows[f"{case}_masses_emptied"]
        assert emptied["masses_dice"] == 0.0 and emptied["tumor_surface_dice"] == 0.0
        none = rows[f"{case}_no_tumor_anywhere"]
        assert none["tumor_dice"] == 1.0 and none["tumor_surface_dice"] == 1.0
        relabelled = rows[f"{case}_cyst_as_tumor"]
        assert relabelled["masses_dice"] == 1.0 and relabelled["tumor_dice"] < 1.0
        assert 0 < rows[f"{case}_erosion"]["kidney_and_masses_surface_dice"] < 1
    # the summary row is the mean over cases (the challenge's "average" row)
    for key in ("kidney_and_masses_dice", "tumor_surface_dice", "mean_dice"):
        assert doc["summary"][key] == pytest.approx(np.mean([r[key] for r in doc["cases"]]), abs=1e-12)


@pytest.mark.slow
def test_kits23_surface_dice_matches_monai_deepmind_table(real_pairs):
    """A third implementation where installed: MONAI's DeepMind-table surface Dice (float32)."""
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("monai.metrics")
    from kidneyseg.io import load_volume

    cid = f"{CASES[0]}_dilation"
    pred = load_volume(real_pairs / "pred" / f"{cid}.nii.gz", "label", KITS23.label_values)
    gt = load_volume(real_pairs / "gt" / f"{cid}.nii.gz", "label", KITS23.label_values)
    ours = kits23_case_metrics(pred.array, gt.array, gt.spacing)
    for region in KITS23.regions:
        p, g = region.mask(pred.array), region.mask(gt.array)
        box = tuple(slice(max(a - 2, 0), b + 3) for a, b in zip(np.argwhere(p | g).min(0), np.argwhere(p | g).max(0)))
        sd = metrics.compute_surface_dice(torch.from_numpy(p[box][None, None]).float(),
                                          torch.from_numpy(g[box][None, None]).float(), [region.tolerance_mm],
                                          include_background=True, spacing=list(gt.spacing), use_subvoxels=True)
        assert ours[f"{region.name}_surface_dice"] == pytest.approx(float(sd), abs=1e-6)


# ----------------------------------------------------------------------- small, fast tests
def _tiny_pair():
    gt = np.zeros((10, 16, 16), np.uint8)
    gt[2:8, 3:13, 3:13] = 1
    gt[3:6, 5:9, 5:9] = 2
    gt[4:6, 10:12, 10:12] = 3
    return gt


def test_tiny_pairs_agree_with_the_reference_and_the_empty_rules(tmp_path, write_nifti):
    gt = _tiny_pair()
    aff = kits_affine((2.5, 0.8, 0.7))
    preds = {"same": gt, "cyst_as_tumor": np.where(gt == 3, 2, gt).astype(np.uint8),
             "dilated": np.where(ndimage.binary_dilation(gt > 0) & (gt == 0), 1, gt).astype(np.uint8),
             "empty": np.zeros_like(gt)}
    for name, pred in preds.items():
        write_nifti(gt, aff, f"gt/case_{name}.nii.gz", np.uint8)
        write_nifti(pred, aff, f"pred/case_{name}.nii.gz", np.uint8)
    rows = {r["case_id"]: r for r in evaluate_folders(tmp_path / "pred", tmp_path / "gt", progress=False,
                                                      protocol="kits23")}
    for name in preds:
        ref = reference_kits23(tmp_path / "pred" / f"case_{name}.nii.gz", tmp_path / "gt" / f"case_{name}.nii.gz")
        for key, value in ref.items():
            assert rows[f"case_{name}"][key] == pytest.approx(value, abs=1e-9), (name, key)
    assert rows["case_empty"]["mean_dice"] == 0.0 and rows["case_same"]["mean_surface_dice"] == 1.0
    assert rows["case_cyst_as_tumor"]["masses_dice"] == 1.0


def test_protocol_defaults_from_the_references_dataset(tmp_path, write_nifti, capsys):
    gt = _tiny_pair()
    aff = kits_affine((2.5, 0.8, 0.7))
    write_nifti(gt, aff, "gt/case_00000/segmentation.nii.gz", np.uint8)
    write_nifti(gt, aff, "pred/case_00000.nii.gz", np.uint8)
    rows = evaluate_folders(tmp_path / "pred", tmp_path / "gt", progress=False)  # a cyst -> kits23
    assert rows[0]["protocol"] == "kits23" and rows[0]["tumor_dice"] == 1.0
    with pytest.raises(KidneysegError, match=r"label values must be in \{0, 1, 2\}, found \[3\]"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", progress=False, protocol="kits19")
    (tmp_path / "gt" / "kits.json").write_text("[]")  # a KiTS19 folder: the cyst is refused
    with pytest.raises(KidneysegError, match=r"case_00000.*found \[3\]"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", progress=False)
    rc = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--protocol", "kits23",
               "--tolerance-mm", "2", "--no-progress"])
    assert rc == 2 and "fixes the surface-Dice tolerance per region" in capsys.readouterr().err


def test_kits23_csv_columns_and_summary(tmp_path, write_nifti):
    gt = _tiny_pair()
    aff = kits_affine((2.5, 0.8, 0.7))
    write_nifti(gt, aff, "gt/case_00000.nii.gz", np.uint8)
    pred = gt.copy()
    pred[gt == 2] = 1
    write_nifti(pred, aff, "pred/case_00000.nii.gz", np.uint8)
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--protocol", "kits23",
                 "--csv", str(tmp_path / "m.csv"), "--no-progress"]) == 0
    import csv

    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert tuple(rows[0]) == get_protocol("kits23").columns
    assert [r["case_id"] for r in rows] == ["case_00000", "mean"]
    assert float(rows[0]["tumor_dice"]) == 0.0 and float(rows[0]["kidney_and_masses_dice"]) == 1.0
    assert float(rows[1]["mean_dice"]) == pytest.approx((1.0 + float(rows[0]["masses_dice"]) + 0.0) / 3, abs=1e-6)


def test_classic_table_differs_from_lewiner_only_on_ambiguous_cubes():
    from kidneyseg.evaluate.metrics import _cube_areas

    classic, lewiner = _cube_areas((1.0, 1.0, 1.0), "classic"), _cube_areas((1.0, 1.0, 1.0), "lewiner")
    assert classic[1] == pytest.approx(math.sqrt(3) / 8) and classic[15] == pytest.approx(1.0)
    # two corners diagonal on one face (code 6): classic separates them (two corner triangles)
    assert classic[6] == pytest.approx(2 * math.sqrt(3) / 8) and lewiner[6] > classic[6]
    assert np.allclose(classic, classic[255 - np.arange(256)])  # a cube and its complement: one surface
    assert protocols.region_scores(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 3), bool), (1, 1, 1), 1.0) == (1.0, 1.0)
