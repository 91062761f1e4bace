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


# ------------------------------------------------------------------------------------ KiTS23
KITS23_COLUMNS = ("kidney_and_masses_dice", "masses_dice", "tumor_dice", "kidney_and_masses_surface_dice",
                  "masses_surface_dice", "tumor_surface_dice", "mean_dice", "mean_surface_dice")


def test_metric_columns_per_dataset():
    from kidneyseg.viewer.catalog import METRIC_COLUMNS, VOLUME_KEYS
    from kidneyseg.viewer.metrics import metric_columns, volume_keys

    assert metric_columns("kits19") == METRIC_COLUMNS and metric_columns(None) == METRIC_COLUMNS
    assert set(volume_keys("kits19")) == set(VOLUME_KEYS)
    assert metric_columns("kits23") == KITS23_COLUMNS
    assert volume_keys("kits23") == ("gt_kidney_and_masses_ml", "gt_masses_ml", "gt_tumor_ml",
                                     "pred_kidney_and_masses_ml", "pred_masses_ml", "pred_tumor_ml")


def test_quick_metrics_kits23_regions_by_hand():
    label = np.zeros((10, 10, 10), np.uint8)
    label[2:8, 2:8, 2:8] = 1
    label[4:6, 4:6, 4:6] = 3                             # a cyst, no tumor
    pred = label.copy()
    pred[4:6, 4:6, 4:6] = 2                              # the cyst called tumor
    m = quick_metrics(label, pred, (1.0, 1.0, 1.0), dataset="kits23")
    assert set(KITS23_COLUMNS) <= set(m)
    assert m["kidney_and_masses_dice"] == 1.0 and m["masses_dice"] == 1.0   # both regions hold it
    assert m["tumor_dice"] == 0.0 and m["tumor_surface_dice"] == 0.0        # reference tumor empty: 0
    assert m["mean_dice"] == pytest.approx(2 / 3)
    assert m["gt_masses_ml"] == pytest.approx(0.008) and m["gt_tumor_ml"] == 0.0
    assert m["pred_tumor_ml"] == pytest.approx(0.008) and m["pred_kidney_and_masses_ml"] == pytest.approx(0.216)
    none = quick_metrics(label, label, (1.0, 1.0, 1.0), dataset="kits23")
    assert none["tumor_dice"] == 1.0 and none["tumor_surface_dice"] == 1.0  # both empty: 1 (KiTS23 rule)
    assert not any(k.startswith("kidney_hd95") or k == "kidney_dice" for k in none)
    with pytest.raises(ValueError, match="fixes the surface-Dice tolerance per region"):
        quick_metrics(label, pred, (1.0, 1.0, 1.0), tolerance_mm=2.0, dataset="kits23")


def test_kits23_values_are_the_protocols_on_the_whole_volume():
    """The bounding-box crop changes nothing: every value equals the kits23 protocol on the full maps."""
    from kidneyseg.evaluate.protocols import get_protocol

    from .browser.fake_run import perturb, synth_case

    _, label = synth_case(3, cyst=True)
    pred = perturb(label, 3)
    assert (label == 3).any() and (pred == 3).any()
    spacing = (2.5, 1.6, 1.6)
    ours = quick_metrics(label, pred, spacing, dataset="kits23")
    official = get_protocol("kits23").case_metrics(pred, label, spacing)
    for key in KITS23_COLUMNS:
        assert ours[key] == pytest.approx(official[key], abs=1e-9), key
    for region in ("kidney_and_masses", "masses", "tumor"):
        assert ours[f"gt_{region}_ml"] == pytest.approx(official[f"gt_{region}_ml"], abs=1e-9)
        assert ours[f"pred_{region}_ml"] == pytest.approx(official[f"{region}_ml"], abs=1e-9)
        assert 0 < ours[f"{region}_surface_dice"] < 1  # the perturbation is visible (the test can fail)


def test_case_summary_kits23_from_the_csv_and_computed(tmp_path):
    from kidneyseg.viewer.catalog import open_catalog
    from kidneyseg.viewer.metrics import case_summary

    from .browser.fake_run import make_fake_run

    run = make_fake_run(tmp_path, n_cases=1, dataset="kits23")
    case = open_catalog(run).load_case("case_00000")
    from_csv = case_summary(case)
    assert from_csv["source"] == "metrics_csv" and from_csv["protocol"] == "kits23"
    assert from_csv["tumor_tolerance_mm"] == pytest.approx(1.1498198361434828)
    assert "tolerance_mm" not in from_csv and "kidney_dice" not in from_csv
    (run / "metrics.csv").unlink()
    computed = case_summary(open_catalog(run).load_case("case_00000"))
    assert computed["source"] == "viewer"
    for key in KITS23_COLUMNS:  # the CSV holds 6 significant digits
        assert computed[key] == pytest.approx(from_csv[key], rel=1e-5), key
    assert computed["tumor_size_cm"] == 2.0 and computed["tumor_diameter_gt_cm"] > 0


def test_case_summary_kits19_keys_are_unchanged(tmp_path):
    from kidneyseg.viewer.catalog import METRIC_COLUMNS, VOLUME_KEYS, open_catalog
    from kidneyseg.viewer.metrics import case_summary

    from .browser.fake_run import make_fake_run

    run = make_fake_run(tmp_path, n_cases=1)
    summary = case_summary(open_catalog(run).load_case("case_00000"))
    assert set(summary) == {*METRIC_COLUMNS, *VOLUME_KEYS, "source", "protocol", "dataset", "tumor_diameter_gt_cm",
                            "tumor_diameter_pred_cm", "tumor_size_cm", "tolerance_mm"}
    assert summary["protocol"] == "kits19" and summary["tolerance_mm"] == 2.0
