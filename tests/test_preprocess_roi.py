"""kidneyseg.preprocess.roi: exact crop inversion, the fixed-size box, per-kidney boxes, real labels."""

import numpy as np
import pytest

from kidneyseg.preprocess import roi, roi_study

from .conftest import tiny_label


@pytest.mark.parametrize("center,size", [((5, 5, 5), (4, 4, 4)), ((0, 0, 9), (7, 3, 6)),
                                         ((4.5, 2, 3), (30, 25, 2)), ((-3, 12, 4), (5, 5, 5))])
def test_crop_geometry_and_json(center, size):
    crop = roi.crop_for_center(center, size, (10, 11, 12))
    assert crop.size == tuple(size)
    # the part inside the volume plus the padding on each side make up the box
    for s_in, before, after, n in zip(crop.inside, crop.pad_before, crop.pad_after, crop.size):
        assert (s_in.stop - s_in.start) + before + after == n or s_in.stop <= s_in.start
    assert roi.Crop.from_dict(crop.to_dict()) == crop
    assert crop.to_dict()["pad_before"] == list(crop.pad_before)


def test_box_is_centred_on_foreground_padded_not_shifted():
    lab = np.zeros((40, 40, 40), np.uint8)
    lab[10:15, 20:31, 3:8] = 1
    lab[12, 25, 8] = 2
    center = roi.foreground_center(lab)
    assert center == (12.0, 25.0, 5.5)
    crop = roi.crop_for_center(center, roi.box_voxels((20.0, 16.0, 16.0), (2.0, 1.0, 1.0)), lab.shape)
    assert crop.size == (10, 16, 16)
    assert crop.pad_before == (0, 0, 2)                 # x reaches below 0: padded, not shifted
    assert roi.foreground_center(np.zeros((4, 4, 4), np.uint8)) is None


@pytest.mark.parametrize("spacing, box_mm", [((2.0, 1.0, 1.0), (20.0, 16.0, 16.0)),      # box inside
                                             ((3.0, 0.8, 0.8), (60.0, 40.0, 40.0)),      # box past the edges
                                             ((1.0, 1.0, 1.0), (30.0, 36.0, 44.0))])
def test_stage2_box_and_its_inverse_are_exact(spacing, box_mm):
    """The real path: preprocess_case cuts the box at the target spacing, paste_label_back inverts it.

    With the target spacing equal to the original one the round trip is the identity wherever the box
    covers the volume, and background elsewhere; the foreground is never cut."""
    from kidneyseg.preprocess.case import paste_label_back, preprocess_case
    from kidneyseg.preprocess.plan import Plan

    lab = np.zeros((20, 40, 44), np.uint8)
    lab[6:12, 14:26, 4:16] = 1
    lab[8:10, 18:22, 12:16] = 2
    img = lab.astype(np.float32) * 100
    plan = Plan(clip_low_hu=-100, clip_high_hu=300, mean_hu=0, std_hu=100, target_spacing=spacing,
                stage1_spacing=(4.0, 4.0, 4.0), box_size_mm=box_mm)
    x, y, props = preprocess_case(img, lab, spacing, plan, 2)
    assert y.shape == x.shape == roi.box_voxels(box_mm, spacing)
    assert (y > 0).sum() == (lab > 0).sum()
    back = paste_label_back(y, props)
    assert back.shape == lab.shape and np.array_equal(back, lab)
    crop = roi.crop_for_center(props.center_vox, props.box_voxels, lab.shape)
    outside = np.ones(lab.shape, bool)
    outside[crop.inside] = False
    assert not back[outside].any()


def test_fit_box_size_adds_margin_on_both_sides():
    assert roi.fit_box_size([(10, 20, 30), (40, 5, 6)], margin_mm=5) == (50.0, 30.0, 40.0)
    with pytest.raises(ValueError, match="no training case has foreground"):
        roi.fit_box_size([], 0)


def test_kidney_boxes_split_left_and_right():
    lab = tiny_label((12, 20, 24))
    boxes = roi.kidney_boxes(lab, (1.0, 1.0, 10.0))        # kidneys ~150 mm apart in x
    assert len(boxes) == 2
    assert boxes[0][1][2] <= boxes[1][0][2]                 # left box entirely before the right one
    assert all((lab[tuple(slice(a, b) for a, b in zip(*bx))] > 0).any() for bx in boxes)
    one = roi.kidney_boxes(lab, (1.0, 1.0, 1.0), min_separation_mm=100)   # too close: one box
    assert one == [roi.bbox(lab > 0)]


def test_compare_strategies_on_synthetic_geometry():
    geoms = []
    for i, z0 in enumerate([5, 40, 70]):
        lab = np.zeros((100, 50, 60), np.uint8)
        lab[z0:z0 + 20, 10:30, 5:15] = 1
        lab[z0:z0 + 20, 10:30, 45:55] = 1
        geoms.append(roi_study.LabelGeometry(f"c{i}", lab.shape, (1.0, 1.0, 1.0), roi.bbox(lab > 0),
                                       roi.kidney_boxes(lab, (1.0, 1.0, 1.0)), int((lab > 0).sum())))
    df = roi_study.compare_strategies(geoms, margin_mm=0)
    assert df.attrs["box_size_mm"] == (20.0, 20.0, 50.0)
    s = df.groupby("strategy")["kept_fraction"].median()
    # the fixed-location box must span z 5..90 for all three; the centred box keeps 20 slices of 100
    assert s["fixed_location"] == pytest.approx(85 * 20 * 50 / (100 * 50 * 60))
    assert s["fixed_size_centered"] == pytest.approx(20 * 20 * 50 / (100 * 50 * 60))
    assert s["per_kidney"] == pytest.approx(2 * 20 * 20 * 10 / (100 * 50 * 60))
    assert (df["fg_cut_fraction"] == 0).all()
    # a box fitted on two cases cuts the third (held out) when it is larger
    geoms[2] = roi_study.LabelGeometry("c2", (100, 50, 60), (1.0, 1.0, 1.0), ((70, 10, 5), (99, 30, 55)), [], 1)
    held = roi_study.compare_strategies(geoms, train_ids=["c0", "c1"], margin_mm=0)
    row = held[(held.case_id == "c2") & (held.strategy == "fixed_size_centered")].iloc[0]
    assert row.split == "val" and row.fg_cut_fraction == pytest.approx(1 - 20 / 29)


def test_real_labels_kidney_boxes(kits19_dir):
    g = roi_study.label_geometry(kits19_dir / "case_00000" / "segmentation.nii.gz")
    assert g.case_id == "case_00000" and g.fg_box is not None
    assert len(g.kidney_boxes) == 2
    ext = [roi.extent_mm(b, g.spacing) for b in g.kidney_boxes]
    assert all(40 < e[0] < 200 and 30 < e[2] < 150 for e in ext)   # kidney-sized, in mm


@pytest.mark.slow
@pytest.mark.kits19
def test_real_label_box_size_reproduces_thesis(kits19_dir):
    """All 210 label maps: box 216 x 180 x 296 mm (z, y, x) without margin, median 81 % removed."""
    paths = [(p.parent.name, str(p)) for p in sorted(kits19_dir.glob("case_*/segmentation.nii.gz"))]
    geoms = roi_study.scan_labels(paths, workers=2, progress=False)
    df = roi_study.compare_strategies(geoms, margin_mm=0)
    assert df.attrs["box_size_mm"] == pytest.approx((216.0, 179.6, 295.9), abs=0.5)
    removed = df[df.strategy == "fixed_size_centered"]["removed_fraction"].median()
    assert removed == pytest.approx(0.81, abs=0.01)
