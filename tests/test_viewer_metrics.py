"""kidneyseg.viewer.metrics: the dashboard's numbers are the package's metrics, nothing of its own."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kidneyseg.evaluate import metrics as evaluate
from kidneyseg.io import affine_from_spacing
from kidneyseg.viewer.metrics import largest_tumor_diameter_mm, quick_metrics


def test_largest_tumor_diameter_is_the_biggest_components():
    m = np.zeros((5, 5, 30), np.uint8)
    m[1:4, 1:4, 1:29] = 1
    m[2, 2, 2:13] = 2                                   # 11 voxels: centres 10 voxels apart
    m[2, 2, 20:23] = 2                                  # a smaller second tumor, not the largest
    assert largest_tumor_diameter_mm(m, affine_from_spacing((1.0, 1.0, 0.8))) == pytest.approx(8.0)
    assert math.isnan(largest_tumor_diameter_mm(np.zeros((3, 3, 3), np.uint8), np.eye(4)))
    assert math.isnan(largest_tumor_diameter_mm(None, np.eye(4)))


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


def test_values_are_evaluates_on_the_whole_volume():
    """The bounding-box crop changes nothing: every value equals case_metrics on the full volumes."""
    from .browser.fake_run import perturb, synth_case

    _, label = synth_case(2)
    pred = perturb(label, 2)
    spacing = (2.5, 1.6, 1.6)
    ours = quick_metrics(label, pred, spacing)
    official = evaluate.case_metrics(pred, label, spacing, tolerance_mm=2.0)
    for key in ("kidney_dice", "tumor_dice", "mean_dice", "kidney_surface_dice", "tumor_surface_dice",
                "kidney_hd95", "tumor_hd95"):
        assert ours[key] == pytest.approx(official[key], abs=1e-9), key
    assert 0 < ours["kidney_surface_dice"] < 1  # the perturbation is visible (the test can fail)


def test_the_viewer_has_no_metric_implementation_of_its_own():
    import kidneyseg.viewer.metrics as vm

    for name in ("dice", "hd95", "surface_dice", "surface_distances", "largest_diameter_mm", "ConvexHull",
                 "ndimage"):
        assert not hasattr(vm, name), name
