"""kidneyseg.measure: volumes, diameters and per-case statistics against analytic answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kidneyseg.io import affine_from_spacing
from kidneyseg.measure.diameters import axial_diameter_mm, max_diameter_mm, max_pairwise_distance
from kidneyseg.measure.statistics import case_statistics
from kidneyseg.measure.volumes import volume_ml, voxel_volume_ml


def ball(shape, spacing, centre_mm, radius_mm) -> np.ndarray:
    """Voxels whose centre lies within ``radius_mm`` of ``centre_mm`` (index space x spacing)."""
    g = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((gi - c) ** 2 for gi, c in zip(g, centre_mm)) <= radius_mm ** 2


def chord_bounds(radius, step):
    """Centre-to-centre diameter of a sampled ball lies in (2R - 2 step, 2R]."""
    return 2 * radius - 2 * step, 2 * radius + 1e-9


# ------------------------------------------------------------------------------------ diameters
def test_sphere_diameters_at_anisotropic_spacing():
    spacing = (3.0, 0.7, 0.9)
    radius = 15.0
    shape = (16, 60, 50)
    m = ball(shape, spacing, (22.5, 21.0, 22.5), radius)
    lo, hi = chord_bounds(radius, 0.9)
    d3, dax = max_diameter_mm(m, spacing), axial_diameter_mm(m, spacing)
    assert lo < d3 <= hi
    assert lo < dax <= hi
    # the analytic volume 4/3 pi R^3 within the sampling error of a 3 mm slice grid
    assert volume_ml(m, spacing) == pytest.approx(4 / 3 * math.pi * radius ** 3 / 1000, rel=0.03)


def test_an_ellipsoid_long_in_z_has_a_short_axial_diameter():
    spacing = (1.0, 1.0, 1.0)
    g = np.meshgrid(*[np.arange(n, dtype=float) for n in (61, 21, 21)], indexing="ij")
    m = ((g[0] - 30) / 30) ** 2 + ((g[1] - 10) / 5) ** 2 + ((g[2] - 10) / 5) ** 2 <= 1
    assert max_diameter_mm(m, spacing) == pytest.approx(60.0)
    assert axial_diameter_mm(m, spacing) == pytest.approx(10.0)


def test_diameters_go_through_the_affine_not_the_array_order():
    bar = np.zeros((3, 3, 12), bool)
    bar[1, 1, 1:11] = True                           # 10 voxels: centres 9 steps apart
    assert max_diameter_mm(bar, (1.0, 1.0, 0.5)) == pytest.approx(4.5)
    # an affine whose x column is oblique and 2 mm long: 9 steps of 2 mm
    aff = np.eye(4)
    aff[:3, 2] = [0.0, np.sqrt(2), np.sqrt(2)]
    assert max_diameter_mm(bar, aff) == pytest.approx(18.0)
    assert math.isnan(max_diameter_mm(np.zeros((3, 3, 3), bool), (1, 1, 1)))
    assert math.isnan(axial_diameter_mm(np.zeros((3, 3, 3), bool), (1, 1, 1)))
    one = np.zeros((3, 3, 3), bool)
    one[1, 1, 1] = True
    assert max_diameter_mm(one, (1, 1, 1)) == 0.0 and axial_diameter_mm(one, (1, 1, 1)) == 0.0


def test_pairwise_maximum_is_exact_in_chunks():
    pts = np.random.default_rng(0).normal(size=(700, 3))
    brute = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).max()
    assert max_pairwise_distance(pts, chunk_elements=1000) == pytest.approx(brute)


def test_voxel_volume_of_a_sheared_grid_is_its_determinant():
    aff = affine_from_spacing((2.5, 0.8, 0.8))
    sheared = aff.copy()
    sheared[:3, 0] += [0.0, 1.0, 0.0]                # slices step sideways (gantry tilt)
    assert voxel_volume_ml(sheared) == pytest.approx(voxel_volume_ml(aff)) == pytest.approx(0.0016)


# ------------------------------------------------------------------------------------ statistics
def two_kidneys(shape=(24, 40, 60), spacing=(2.0, 1.0, 1.0)):
    """Kidney balls at x index 12 (patient right in the canonical layout) and 47 (left); a tumor on the left."""
    lab = np.zeros(shape, np.uint8)
    lab[ball(shape, spacing, (24.0, 20.0, 12.0), 9.0)] = 1
    lab[ball(shape, spacing, (24.0, 20.0, 47.0), 10.0)] = 1
    tumor = ball(shape, spacing, (24.0, 20.0, 52.0), 5.0)
    lab[tumor] = 2
    return lab, tumor


def test_left_and_right_come_from_the_affine():
    spacing = (2.0, 1.0, 1.0)
    lab, tumor = two_kidneys(spacing=spacing)
    aff = affine_from_spacing(spacing)              # canonical: axis 2 runs to the patient's left
    s = case_statistics(lab, aff)
    right, left = s.kidney("right"), s.kidney("left")
    assert right.centroid_ras_mm[0] > left.centroid_ras_mm[0]   # RAS x grows to the patient's right
    assert s.tumor_count == 1 and s.tumors[0].kidney == "left" and left.tumor_count == 1 and right.tumor_count == 0
    # the same array with the x axis flipped in the affine: the kidneys swap sides, nothing else changes
    flipped = aff.copy()
    flipped[:3, 2] *= -1
    f = case_statistics(lab, flipped)
    assert f.tumors[0].kidney == "right"
    assert f.kidney("right").volume_ml == pytest.approx(left.volume_ml)
    assert f.kidney("left").volume_ml == pytest.approx(right.volume_ml)
    assert s.midline == f.midline == "kidneys"


def test_volumes_diameters_and_hu_match_the_construction():
    spacing = (2.0, 1.0, 1.0)
    lab, tumor = two_kidneys(spacing=spacing)
    rng = np.random.default_rng(0)
    image = np.full(lab.shape, -1000.0, np.float32)
    image[:, 2:38, 2:58] = 20.0                                   # body
    image[lab == 1] = rng.normal(150.0, 10.0, int((lab == 1).sum()))
    image[lab == 2] = 60.0
    s = case_statistics(lab, affine_from_spacing(spacing), image)
    vox = 2.0 / 1000
    left = s.kidney("left")
    assert left.volume_ml == pytest.approx(((lab > 0) & (np.arange(60) > 30)).sum() * vox)
    assert left.tissue_ml == pytest.approx(((lab == 1) & (np.arange(60) > 30)).sum() * vox)
    assert left.tumor_ml == pytest.approx(tumor.sum() * vox) == pytest.approx(s.tumor_burden_ml)
    tissue = image[(lab == 1) & (np.arange(60) > 30)]
    assert left.hu_mean == pytest.approx(tissue.mean(), rel=1e-6)
    assert left.hu_sd == pytest.approx(tissue.std(), rel=1e-5)
    assert left.hu_median == pytest.approx(np.median(tissue), rel=1e-6)
    t = s.tumors[0]
    assert t.hu_mean == pytest.approx(60.0) and t.hu_sd == pytest.approx(0.0, abs=1e-6)
    lo, hi = chord_bounds(5.0, 2.0)
    assert lo < t.diameter_3d_mm <= hi and 10.0 - 2.0 < t.diameter_axial_mm <= 10.0
    assert s.midline == "body" and s.hu


def test_one_kidney_takes_its_side_from_the_body_midline():
    spacing = (2.0, 1.0, 1.0)
    lab = np.zeros((24, 40, 60), np.uint8)
    lab[ball(lab.shape, spacing, (24.0, 20.0, 47.0), 8.0)] = 1   # only the left kidney (x index > midline)
    image = np.full(lab.shape, -1000.0, np.float32)
    image[:, 4:36, 5:55] = 30.0                                  # body centred at x index 29.5
    image[:, 38:40, 0:60] = 200.0                                # a table: a second, smaller region
    s = case_statistics(lab, affine_from_spacing(spacing), image)
    assert [k.side for k in s.kidneys] == ["left"] and s.midline == "body"
    assert s.midline_x_mm == pytest.approx(-29.5)                # canonical affine: x = -index
    s2 = case_statistics(lab, affine_from_spacing(spacing))       # no image, one kidney: the isocentre
    assert s2.midline == "isocentre" and s2.kidneys[0].side == "left"


def test_several_tumors_are_numbered_by_volume_and_empty_maps_give_nothing():
    spacing = (1.0, 1.0, 1.0)
    lab = np.zeros((20, 20, 40), np.uint8)
    lab[2:18, 2:18, 2:18] = 1
    lab[4:6, 4:6, 4:6] = 2                   # 8 voxels
    lab[10:14, 10:14, 10:14] = 2             # 64 voxels
    s = case_statistics(lab, affine_from_spacing(spacing))
    assert [t.number for t in s.tumors] == [1, 2]
    assert [round(t.volume_ml * 1000) for t in s.tumors] == [64, 8]
    assert s.tumor_burden_ml == pytest.approx(0.072)
    row = s.row("c1")
    assert row["tumor_count"] == 2 and row["largest_tumor_ml"] == pytest.approx(0.064)
    e = case_statistics(np.zeros((5, 5, 5), np.uint8), np.eye(4))
    assert e.kidneys == [] and e.tumors == [] and e.tumor_burden_ml == 0.0
    d = e.to_dict()
    assert d["tumor_count"] == 0 and d["kidneys"] == {}
    assert math.isnan(e.row("x")["right_kidney_ml"])


def test_statistics_json_has_no_nan_and_bad_arguments_are_refused():
    lab = np.zeros((6, 6, 6), np.uint8)
    lab[1:4, 1:4, 1:4] = 1
    d = case_statistics(lab, np.eye(4)).to_dict()
    import json

    text = json.dumps(d, allow_nan=False)           # NaN HU (no image) became null
    assert '"hu_mean": null' in text
    with pytest.raises(ValueError, match="affine must be 4x4"):
        case_statistics(lab, np.eye(3))
    with pytest.raises(ValueError, match="image shape"):
        case_statistics(lab, np.eye(4), np.zeros((2, 2, 2)))


def test_focus_point_is_the_largest_tumor_else_the_labels_else_none():
    """One rule for where previews and the viewer's slices look (kidneyseg.measure.focus)."""
    import doctest

    import kidneyseg.measure.focus as focus

    assert doctest.testmod(focus).failed == 0
    lab = np.zeros((20, 20, 20), np.uint8)
    assert focus.focus_point(lab) is None
    lab[2:18, 2:18, 2:18] = 1
    lab[3:5, 3:5, 3:5] = 2            # a small tumor
    lab[12:17, 12:17, 12:17] = 2      # the largest tumor: its centre wins
    assert focus.focus_point(lab) == (14, 14, 14)
