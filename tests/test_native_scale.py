"""The data path at native KiTS19 size, end to end, on two painted real label maps.

case_00160 (252 x 512 x 796, the one case that is not 512 x 512 in-plane) and case_00042 (301 slices
of 1 mm: longer than the ROI box, so the box is cut out of the volume along z) are painted with
``kidneyseg phantom --from-labels``, then every command of the pipeline runs at the thesis's spacings:
manifest, plan, preprocess (both stages), a tiny network trained for 2 iterations per stage, predict,
evaluate. Each step's outputs and geometry are checked, and each step's row reaches resources.json.
Skips cleanly without ../shared/kits19. Slow: it paints, preprocesses, predicts and evaluates about
170 M voxels, about 710 CPU seconds in all (measured 2026-12-07: 452 s user + 255 s system; the
prediction of the two cases took 455 of them at overlap 0.5, so it predicts at overlap 0.25 here,
which changes the number of windows, not the path).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from kidneyseg.cli import main
from kidneyseg.resources import ENV_RUN_DIR, read_resources, record

pytestmark = [pytest.mark.slow, pytest.mark.kits19,
              pytest.mark.filterwarnings("ignore:.*box reaches outside:UserWarning")]
CASES = ("case_00042", "case_00160")


@pytest.fixture(scope="module")
def native(kits19_dir, tmp_path_factory):
    """Paint the two cases, then run manifest, plan, preprocess, train (both stages), predict, evaluate."""
    root = tmp_path_factory.mktemp("native")
    src = root / "labels"
    src.mkdir()
    for c in CASES:
        (src / c).symlink_to(kits19_dir / c, target_is_directory=True)
    (src / "kits.json").write_text((kits19_dir / "kits.json").read_text())
    run, data = root / "run", root / "data"
    saved = os.environ.get(ENV_RUN_DIR)
    os.environ[ENV_RUN_DIR] = str(run)  # the package's own steps record themselves
    try:
        steps = [("paint", data, ["phantom", str(data), "--from-labels", str(src), "--cases", "0", "--workers", "2",
                                  "--no-progress"]),
                 ("manifest", run / "manifest.csv", ["manifest", str(data), "-o", str(run / "manifest.csv"),
                                                     "--workers", "2", "--no-progress"]),
                 ("plan command", run / "plan.json", ["plan", str(run / "manifest.csv"), "-o", str(run / "plan.json"),
                                                      "--workers", "2", "--no-progress"]),
                 ("preprocess command", run / "cache", ["preprocess", str(run / "manifest.csv"), "--plan",
                                                        str(run / "plan.json"), "--out", str(run / "cache"),
                                                        "--workers", "2", "--no-progress"])]
        for step, target, argv in steps:
            with record(step, target, run_dir=run):
                assert main(argv) == 0, step
            if step == "manifest":  # one training case, one validation case: the long one trains
                import pandas as pd

                df = pd.read_csv(run / "manifest.csv")
                df["split"] = ["train" if c == "case_00042" else "val" for c in df.case_id]
                df.to_csv(run / "manifest.csv", index=False)
        from kidneyseg.train.config import preset, save_config

        for stage in (1, 2):
            cfg = preset("demo", stage, {"epochs": 1, "iterations_per_epoch": 2, "val_iterations": 1,
                                         "patch_size": [64, 128, 128], "progress": False})
            save_config(cfg, run / f"stage{stage}.json")
            assert main(["train", "--config", str(run / f"stage{stage}.json"), "--cache", str(run / "cache"),
                         "--out", str(run / "model"), "--device", "auto", "--no-progress"]) == 0
        with record("predict command", run / "pred", run_dir=run):
            assert main(["predict", "-i", str(data), "-o", str(run / "pred"), "--model", str(run / "model"),
                         "--overlap", "0.25", "--no-progress"]) == 0
        with record("evaluate command", run / "metrics.json", run_dir=run):
            assert main(["evaluate", "--pred", str(run / "pred"), "--gt", str(data), "--json",
                         str(run / "metrics.json"), "--no-progress"]) == 0
    finally:
        if saved is None:
            os.environ.pop(ENV_RUN_DIR, None)
        else:
            os.environ[ENV_RUN_DIR] = saved
    return run, data


def test_manifest_and_plan_keep_the_native_geometry(native, kits19_dir):
    from kidneyseg.data.manifest import read_manifest
    from kidneyseg.io import read_header
    from kidneyseg.preprocess.plan import Plan

    run, data = native
    df = read_manifest(run / "manifest.csv").set_index("case_id")
    for c in CASES:
        h = read_header(kits19_dir / c / "segmentation.nii.gz")
        assert tuple(df.loc[c, ["shape_z", "shape_y", "shape_x"]]) == h.shape
        assert np.allclose(df.loc[c, ["spacing_z", "spacing_y", "spacing_x"]].astype(float), h.spacing)
        assert read_header(data / c / "imaging.nii.gz").shape == h.shape
    assert df.loc["case_00160", "shape_x"] == 796 and not df.excluded.any()
    plan = Plan.load(run / "plan.json")
    assert plan.target_spacing == (1.0, 0.78, 0.78) and plan.stage1_spacing == (2.5, 1.95, 1.95)
    assert plan.image_dtype == "float16" and plan.box_size_mm is not None


def test_cache_holds_both_stages_at_the_planned_grids(native):
    from kidneyseg.io import load_volume
    from kidneyseg.preprocess.cache import load_case
    from kidneyseg.preprocess.case import paste_label_back
    from kidneyseg.preprocess.plan import Plan
    from kidneyseg.preprocess.resample import new_shape
    from kidneyseg.preprocess.roi import box_voxels

    run, data = native
    plan = Plan.load(run / "plan.json")
    for c in CASES:
        lab = load_volume(data / c / "segmentation.nii.gz", "label")
        for st in (1, 2):
            case = load_case(run / "cache", c, st)
            assert case.image.dtype == np.float16 and case.label.dtype == np.uint8
            assert case.properties.original_shape == lab.shape
            want = new_shape(lab.shape, lab.spacing, plan.stage1_spacing) if st == 1 else \
                box_voxels(plan.box_size_mm, plan.target_spacing)
            assert case.image.shape == case.label.shape == tuple(want)
            assert np.isfinite(case.image).all()
            # the labels go back onto the original grid with the one inverse: kidney volume kept
            back = paste_label_back(np.asarray(case.label), case.properties)
            assert back.shape == lab.shape
            kept = (back > 0).sum() / max(1, (lab.array > 0).sum())
            assert 0.97 < kept < 1.03, (c, st, kept)


def test_training_predictions_and_metrics(native):
    from kidneyseg.io import load_volume
    from kidneyseg.model.folder import ModelFolder

    run, data = native
    folder = ModelFolder(run / "model").require()
    assert folder.stage(1).checkpoint().exists() and folder.stage(2).checkpoint().exists()
    for c in CASES:
        ct = load_volume(data / c / "imaging.nii.gz", "image")
        pred = load_volume(run / "pred" / f"{c}.nii.gz", "label")
        assert pred.shape == ct.shape and np.array_equal(pred.affine, ct.affine)
        assert pred.source.shape == ct.source.shape and np.array_equal(pred.source.affine, ct.source.affine)
        assert set(np.unique(pred.array)) <= {0, 1, 2}
    metrics = json.loads((run / "metrics.json").read_text())
    assert sorted(r["case_id"] for r in metrics["cases"]) == list(CASES)
    assert all(r["kidney_dice"] is None or 0 <= r["kidney_dice"] <= 1 for r in metrics["cases"])


def test_every_step_has_its_resources_row(native):
    run, _ = native
    rows = read_resources(run)
    steps = {r["step"] for r in rows}
    assert {"paint", "manifest", "plan", "preprocess", "train stage 1", "train stage 2", "predict",
            "predict command", "evaluate command"} <= steps
    for r in rows:
        assert r["status"] == "ok" and r["seconds"] > 0 and r["peak_rss_bytes"] > 0
    pre = next(r for r in rows if r["step"] == "preprocess")
    assert pre["bytes_written"] > 0 and set(pre["details"]["seconds_per_case"]) == set(CASES)
    assert pre["peak_rss_bytes"] < 12 * 2**30
