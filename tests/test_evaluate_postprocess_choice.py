"""kidneyseg.evaluate.postprocess_choice: score the strategies on raw predictions, store the best."""

import json

import numpy as np

from kidneyseg.evaluate.postprocess_choice import best_strategy, choose_postprocessing, compare_strategies
from kidneyseg.infer.postprocess import load_choice

from .conftest import kits_affine
from .test_infer_postprocess import SP, anatomy_case


def test_compare_and_store_choice(tmp_path, write_nifti):
    gt = anatomy_case()
    gt[15:17, 15:17, 18:20] = 0
    gt[15:18, 2:5, 20:23] = 0
    pred = anatomy_case()  # reference + two false-positive islands
    scores = compare_strategies([(pred, gt, SP)], options={"anatomy": {"min_component_ml": 0.1}})
    assert scores["anatomy"]["mean_dice"] == 1.0
    assert scores["largest"]["kidney_dice"] < scores["anatomy"]["kidney_dice"]
    assert scores["none"]["tumor_dice"] < 1.0
    aff = kits_affine(SP)
    write_nifti(pred, aff, "pred/case_00000.nii.gz", np.uint8)
    write_nifti(gt, aff, "gt/case_00000/segmentation.nii.gz", np.uint8)
    best, _ = choose_postprocessing(tmp_path / "model", tmp_path / "pred", tmp_path / "gt",
                                    out_dir=tmp_path / "post", options={"anatomy": {"min_component_ml": 0.1}})
    assert best == "anatomy"
    assert load_choice(tmp_path / "model") == ("anatomy", {"min_component_ml": 0.1, "max_kidneys": 2})
    from kidneyseg.io import load_volume
    assert np.array_equal(load_volume(tmp_path / "post" / "case_00000.nii.gz", "label").array, gt)
    # references given as a case -> file mapping (a manifest's split) give the same choice
    refs = {"case_00000": tmp_path / "gt" / "case_00000" / "segmentation.nii.gz"}
    assert choose_postprocessing(tmp_path / "model2", tmp_path / "pred", refs,
                                 options={"anatomy": {"min_component_ml": 0.1}})[0] == "anatomy"
    assert json.loads((tmp_path / "model" / "postprocess.json").read_text())["scores"]["none"]["n_cases"] == 1




def test_ties_go_to_the_strategy_order():
    scores = {n: {"mean_dice": 0.5} for n in ("none", "largest", "anatomy")}
    assert best_strategy(scores) == "anatomy"
