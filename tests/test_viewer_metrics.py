"""kidneyseg.viewer.metrics: the viewer's fallback metrics, hand-checked on tiny masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kidneyseg.viewer.metrics import dice, hd95, largest_diameter_mm, quick_metrics, surface_dice, volume_ml


def box(shape=(12, 12, 12), lo=(3, 3, 3), hi=(8, 8, 8)):
    m = np.zeros(shape, bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


def test_dice_and_volume_hand_checked():
    a = box()                      # 125 voxels
    b = box(lo=(3, 3, 4), hi=(8, 8, 9))  # shifted one voxel in x: overlap 100
    assert dice(a, b) == pytest.approx(2 * 100 / 250)
    assert dice(a, a) == 1.0
    assert math.isnan(dice(np.zeros_like(a), b))        # empty reference -> NaN
    assert dice(a, np.zeros_like(a)) == 0.0
    assert volume_ml(a, (2.0, 1.0, 0.5)) == pytest.approx(125 * 1.0 / 1000)


def test_surface_metrics_fall_with_shift():
    a = box()
    shifted = box(lo=(3, 3, 5), hi=(8, 8, 10))          # 2 voxels along x
    assert surface_dice(a, a, (1, 1, 1), 1.0) == 1.0
    assert hd95(a, a, (1, 1, 1)) == 0.0
    assert hd95(a, shifted, (1, 1, 1)) == pytest.approx(2.0)
    assert hd95(a, shifted, (1, 1, 3.0)) == pytest.approx(6.0)   # spacing in mm along x
    assert 0.0 < surface_dice(a, shifted, (1, 1, 1), 1.0) < surface_dice(a, shifted, (1, 1, 1), 2.0) <= 1.0
    assert math.isnan(hd95(a, np.zeros_like(a), (1, 1, 1)))


def test_largest_diameter_of_a_bar_and_of_the_biggest_component():
    m = np.zeros((5, 5, 30), bool)
    m[2, 2, 2:13] = True                                # 11 voxels: centres 10 voxels apart
    m[2, 2, 20:23] = True                               # a smaller second component, ignored
    assert largest_diameter_mm(m, (1.0, 1.0, 0.8)) == pytest.approx(8.0)
    assert math.isnan(largest_diameter_mm(np.zeros((3, 3, 3), bool), (1, 1, 1)))


def test_quick_metrics_kits_convention():
    label = np.zeros((10, 10, 10), np.uint8)
    label[2:8, 2:8, 2:8] = 1
    label[4:6, 4:6, 4:6] = 2                             # tumor inside the kidney
    pred = label.copy()
    pred[4:6, 4:6, 4:6] = 1                              # tumor missed, kidney region intact
    m = quick_metrics(label, pred, (1.0, 1.0, 1.0))
    assert m["kidney_dice"] == 1.0                       # kidney = label > 0
    assert m["tumor_dice"] == 0.0
    assert m["mean_dice"] == 0.5
    assert m["gt_kidney_ml"] == pytest.approx(0.216) and m["gt_tumor_ml"] == pytest.approx(0.008)
    assert m["pred_kidney_ml"] == pytest.approx(0.216) and m["pred_tumor_ml"] == 0.0
    only_gt = quick_metrics(label, None, (1.0, 1.0, 1.0))
    assert math.isnan(only_gt["kidney_dice"]) and only_gt["gt_kidney_ml"] == pytest.approx(0.216)
    assert math.isnan(only_gt["pred_kidney_ml"])


def test_surface_metrics_skip_large_boxes(monkeypatch):
    from kidneyseg.viewer import metrics

    a = box()
    shifted = box(lo=(3, 3, 5), hi=(8, 8, 10))
    monkeypatch.setattr(metrics, "MAX_SURFACE_VOXELS", 100)   # the 1-voxel-padded union box is larger
    assert math.isnan(metrics.hd95(a, shifted, (1, 1, 1)))
    assert math.isnan(metrics.surface_dice(a, shifted, (1, 1, 1)))
    assert metrics.surface_dice(a, np.zeros_like(a), (1, 1, 1)) == 0.0
    assert metrics.dice(a, shifted) == pytest.approx(0.6)        # Dice is always computed


def test_fallback_uses_evaluate_on_the_cropped_box_with_unchanged_values():
    evaluate = pytest.importorskip("kidneyseg.evaluate.metrics")
    from kidneyseg.viewer.metrics import quick_metrics as qm

    from .browser.fake_run import perturb, synth_case

    _, label = synth_case(2)
    pred = perturb(label, 2)
    spacing = (2.5, 1.6, 1.6)
    ours = qm(label, pred, spacing)
    official = evaluate.case_metrics(pred, label, spacing, tolerance_mm=2.0)   # on the whole volume
    assert ours["method"] == "evaluate"
    for key in ("kidney_dice", "tumor_dice", "mean_dice", "kidney_surface_dice", "tumor_surface_dice",
                "kidney_hd95", "tumor_hd95"):
        assert ours[key] == pytest.approx(official[key], abs=1e-9), key
